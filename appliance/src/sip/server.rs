//! The redirect service's sockets: UDP (`sip-udp`) and TCP (`sip-tcp`).
//! Each message is parsed, answered from the current `PoolView` (cloned
//! `Arc`, never held across `.await`) and counted. A bad datagram or
//! connection is logged at debug level and counted, never propagated: it
//! cannot stop the listener or delay other clients.
//!
//! UDP answers go to the datagram's source address (what `rport`, RFC 3581,
//! would ask for, and what reaches a client behind NAT), so datagrams pass
//! a per-source-prefix rate limit first (`[sip] udp_rate`, `dns::rrl`):
//! beyond it they are dropped unread and counted, and poolgate cannot be
//! used to reflect traffic at a spoofed source. TCP connections are
//! framed by Content-Length (`message::Framer`, which reads each byte a
//! bounded number of times however the stream is cut), carry any number of
//! messages, and are closed after the gate's idle timeout of silence
//! (`net::Limits::sip`), when a message is not complete within the gate's
//! header deadline of its first byte (so a client dripping one byte at a
//! time cannot hold a connection forever), or when a message cannot be
//! framed (after a `400` if one can be addressed); their buffers never
//! exceed `message::MAX_MESSAGE` plus one read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::message::{self, MessageError, Parsed};
use super::redirect::{self, Decision};
use crate::dns::rrl::{self, Limiter, Verdict};
use crate::metrics::{Kind, MetricsWriter, Render};
use crate::net::{self, datagrams, datagrams::Datagram};
use crate::state::{PoolView, PublisherHandle};

/// Counters of the redirect service (exported by the metrics endpoint).
#[derive(Debug, Default)]
pub struct SipStats {
    pub requests: AtomicU64,
    pub redirects: AtomicU64,
    pub bad_requests: AtomicU64,
    /// Messages not answered: responses, ACKs, unaddressable garbage.
    pub dropped: AtomicU64,
    /// Where the addresses-of-record of redirected REGISTERs go (pool name,
    /// AoR), to be remembered for the registrar what-if; `None` in tests
    /// without a reader.
    pub seen: Option<tokio::sync::mpsc::Sender<(String, String)>>,
    /// Seen AoRs not remembered because the writer fell behind.
    pub seen_dropped: AtomicU64,
    /// REGISTERs for a domain that is no pool's, so not remembered.
    pub seen_foreign: AtomicU64,
    /// Users remembered now (after the newest batch and its eviction).
    pub seen_users: AtomicU64,
    /// Users forgotten because of the cap or their age.
    pub seen_evicted: AtomicU64,
    /// UDP datagrams over the per-prefix rate, dropped unread.
    pub udp_rate_limited: AtomicU64,
    /// The accept layer's gates, where the `sip-tcp` and `sip-tls`
    /// listeners' gates live; their refusals are also
    /// `poolgate_sip_connections_refused_total`.
    pub gates: Arc<net::Registry>,
}

impl SipStats {
    /// TCP and TLS connections refused at a cap: the refusals (either
    /// reason) of the `sip-tcp` and `sip-tls` gates, counted once, there.
    pub(crate) fn connections_refused(&self) -> u64 {
        self.gates.refused(&["sip-tcp", "sip-tls"])
    }
}

impl Render for SipStats {
    fn render(&self, out: &mut MetricsWriter) {
        let Self {
            requests,
            redirects,
            bad_requests,
            dropped,
            // The channel itself; what it could not take is `seen_dropped`.
            seen: _,
            seen_dropped,
            seen_foreign,
            seen_users,
            seen_evicted,
            udp_rate_limited,
            // Rendered with every other listener's gate by the registry, and
            // read here for `poolgate_sip_connections_refused_total`.
            gates: _,
        } = self;
        for (name, help, value) in [
            (
                "poolgate_sip_requests_total",
                "SIP messages received.",
                requests,
            ),
            (
                "poolgate_sip_redirects_total",
                "SIP requests answered 301.",
                redirects,
            ),
            (
                "poolgate_sip_bad_requests_total",
                "SIP requests answered 400.",
                bad_requests,
            ),
            (
                "poolgate_sip_dropped_total",
                "SIP messages dropped unanswered.",
                dropped,
            ),
            (
                "poolgate_sip_udp_rate_limited_total",
                "SIP UDP datagrams over the per-source rate, dropped.",
                udp_rate_limited,
            ),
            (
                "poolgate_sip_seen_dropped_total",
                "Seen SIP users not remembered because the writer fell behind.",
                seen_dropped,
            ),
            (
                "poolgate_sip_seen_foreign_total",
                "REGISTERs for a domain of no pool, whose users are not remembered.",
                seen_foreign,
            ),
            (
                "poolgate_sip_seen_evicted_total",
                "Seen SIP users forgotten over the cap or by age.",
                seen_evicted,
            ),
        ] {
            out.counter(name, help, value);
        }
        // Published before the accept layer's per-listener families; kept
        // under its name, read from the `sip-tcp` and `sip-tls` gates.
        out.family(
            "poolgate_sip_connections_refused_total",
            Kind::Counter,
            "SIP TCP connections refused over the cap.",
        )
        .sample(&[], self.connections_refused());
        out.gauge(
            "poolgate_sip_seen_users",
            "Seen SIP users remembered for the registrar what-if.",
            seen_users.load(Ordering::Relaxed),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SipError {
    #[error("SIP socket failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Answer one message; `None` when nothing is to be sent.
fn handle(view: &PoolView, parsed: &Parsed, peer: SocketAddr, stats: &SipStats) -> Option<Vec<u8>> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    match redirect::decide(view, parsed, peer) {
        Decision::Respond(response) => {
            match response.status {
                301 => {
                    stats.redirects.fetch_add(1, Ordering::Relaxed);
                }
                400 => {
                    stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                    if let Err(MessageError::Invalid { reason, .. }) = &parsed.result {
                        tracing::debug!(%peer, ?reason, "Malformed SIP request answered 400");
                    }
                }
                _ => {}
            }
            if let (Some((pool, _)), Some(aor), Some(seen)) =
                (response.registered_to, response.aor, &stats.seen)
                && let Some(pool) = view.pools.get(pool)
            {
                // Only a pool's own users are remembered: anyone can send
                // REGISTERs for made-up domains to fill the table.
                let host = aor.rsplit('@').next().unwrap_or_default();
                if !super::registrar::serves_domain(pool, host) {
                    stats.seen_foreign.fetch_add(1, Ordering::Relaxed);
                } else if seen.try_send((pool.name.clone(), aor)).is_err() {
                    stats.seen_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some((pool, member)) = response.registered_to
                && let Some(member) = view.pools.get(pool).and_then(|p| p.members.get(member))
            {
                member
                    .counters
                    .registrations
                    .fetch_add(1, Ordering::Relaxed);
            }
            Some(response.bytes)
        }
        Decision::Drop(reason) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, reason = reason.as_str(), "SIP message dropped");
            None
        }
    }
}

/// Serve the UDP listener until `shutdown`, in batches, with up to one
/// worker per core of which only the first waits on the socket
/// (`net::datagrams`).
pub(crate) async fn serve_udp(
    socket: UdpSocket,
    publisher: PublisherHandle,
    stats: Arc<SipStats>,
    shutdown: CancellationToken,
) -> Result<(), SipError> {
    // One limiter for the socket, so a source's rate does not multiply by
    // the number of workers; each holds it for one batch.
    let limiter = Arc::new(Mutex::new(Limiter::new(udp_limits(&publisher.current()))));
    let answerer = |_| UdpAnswerer {
        publisher: publisher.clone(),
        stats: Arc::clone(&stats),
        limiter: Arc::clone(&limiter),
    };
    datagrams::serve(socket, net::udp_workers(), UDP_BUFFER, answerer, shutdown).await;
    Ok(())
}

/// The largest UDP datagram, so no SIP message over UDP is cut short.
const UDP_BUFFER: usize = 65_536;

/// The rate limit `[sip] udp_rate` asks for: dropped beyond it, no slip
/// (SIP has no cheap "retry over TCP" answer).
fn udp_limits(view: &PoolView) -> rrl::Limits {
    rrl::Limits::per_second(view.config.sip.udp_rate, 0)
}

/// What one UDP worker answers with.
struct UdpAnswerer {
    publisher: PublisherHandle,
    stats: Arc<SipStats>,
    limiter: Arc<Mutex<Limiter>>,
}

impl datagrams::Answerer for UdpAnswerer {
    fn answer(&mut self, batch: &[Datagram<'_>], replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
        let view = self.publisher.current();
        let verdicts = datagrams::verdicts(&self.limiter, udp_limits(&view), batch);
        for (datagram, verdict) in batch.iter().zip(verdicts) {
            if verdict != Verdict::Allow {
                self.stats.udp_rate_limited.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let parsed = message::parse(datagram.bytes);
            if let Some(reply) = handle(&view, &parsed, datagram.peer, &self.stats) {
                replies.push((reply, datagram.peer));
            }
        }
    }

    fn unaddressed(&mut self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn send_failed(&mut self, peer: SocketAddr, error: &std::io::Error) {
        tracing::debug!(%peer, %error, "SIP UDP send failed");
    }
}

/// Serve the TCP listener until `shutdown`; connections end with it. With
/// `tls`, every connection is a TLS one (`listen.sip_tls`). Connections go
/// through the accept layer's `sip-tcp` / `sip-tls` gate: capped in total
/// and per source, a TLS handshake within its deadline.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    publisher: PublisherHandle,
    stats: Arc<SipStats>,
    shutdown: CancellationToken,
) -> Result<(), SipError> {
    let label = if tls.is_some() { "sip-tls" } else { "sip-tcp" };
    let mut listener = net::Listener::new(listener, stats.gates.gate(label, net::Limits::sip()));
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            conn = listener.accept() => conn,
        };
        let publisher = publisher.clone();
        let stats = Arc::clone(&stats);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let net::Conn { stream, peer, slot } = conn;
            let _ = stream.set_nodelay(true);
            let result = match tls {
                None => serve_connection(stream, peer, &slot, &publisher, &stats, &shutdown).await,
                Some(acceptor) => {
                    let activity = Arc::new(net::Activity::default());
                    match net::accept::tls_handshake(&acceptor, stream, peer, &slot, &activity)
                        .await
                    {
                        Ok(stream) => {
                            serve_connection(stream, peer, &slot, &publisher, &stats, &shutdown)
                                .await
                        }
                        Err(error) => {
                            tracing::debug!(%peer, %error, "SIP TLS handshake not completed");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "SIP TCP connection ended with an error");
            }
        });
    }
}

async fn serve_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    slot: &net::Slot,
    publisher: &PublisherHandle,
    stats: &SipStats,
    shutdown: &CancellationToken,
) -> Result<(), SipError> {
    let limits = slot.limits();
    let mut framer = message::Framer::default();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut replies: Vec<u8> = Vec::new();
    // When the first byte of the message being framed arrived: the whole
    // message must be in within the header deadline of it.
    let mut message_began: Option<Instant> = None;
    let mut read_at = Instant::now();
    loop {
        let mut close = false;
        let mut framed = false;
        loop {
            match framer.next_message() {
                Ok(Some(parsed)) => {
                    framed = true;
                    if let Some(reply) = handle(&publisher.current(), &parsed, peer, stats) {
                        replies.extend_from_slice(&reply);
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    // The stream cannot be kept in step: answer if possible,
                    // then close.
                    let echo = message::parse(framer.pending()).echo;
                    let parsed = Parsed {
                        result: Err(MessageError::Invalid {
                            reason: error.to_string(),
                            addressable: echo.addressable(),
                        }),
                        echo,
                    };
                    if let Some(reply) = handle(&publisher.current(), &parsed, peer, stats) {
                        replies.extend_from_slice(&reply);
                    }
                    close = true;
                    break;
                }
            }
        }
        if framed || framer.pending().is_empty() {
            message_began = None;
        }
        if !framer.pending().is_empty() {
            message_began.get_or_insert(read_at);
        }
        if !replies.is_empty() {
            // A client that never reads must not hold its task forever.
            match tokio::time::timeout(limits.idle_timeout, stream.write_all(&replies)).await {
                Ok(written) => written?,
                Err(_) => {
                    tracing::debug!(%peer, "SIP TCP client stopped reading; closing");
                    return Ok(());
                }
            }
            replies.clear();
        }
        if close {
            return Ok(());
        }
        let idle_deadline = Instant::now() + limits.idle_timeout;
        let (deadline, missed) = match message_began {
            Some(began) if began + limits.header_timeout < idle_deadline => {
                (began + limits.header_timeout, net::Timeout::Header)
            }
            _ => (idle_deadline, net::Timeout::Idle),
        };
        let read = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => read,
        };
        read_at = Instant::now();
        match read {
            Err(_) => {
                slot.timed_out(missed);
                match missed {
                    net::Timeout::Header => tracing::debug!(
                        %peer,
                        header_s = limits.header_timeout.as_secs(),
                        "SIP TCP message not complete in time; closing"
                    ),
                    _ => tracing::debug!(
                        %peer,
                        idle_s = limits.idle_timeout.as_secs(),
                        "SIP TCP connection idle; closing"
                    ),
                }
                return Ok(());
            }
            Ok(Ok(0)) => {
                // The peer finished sending in the middle of a message (a
                // Content-Length larger than the body): say so if possible.
                if !framer.pending().is_empty() {
                    let echo = message::parse(framer.pending()).echo;
                    let parsed = Parsed {
                        result: Err(MessageError::Invalid {
                            reason: "Message ends before its Content-Length".into(),
                            addressable: echo.addressable(),
                        }),
                        echo,
                    };
                    if let Some(reply) = handle(&publisher.current(), &parsed, peer, stats) {
                        stream.write_all(&reply).await?;
                    }
                }
                return Ok(());
            }
            Ok(Ok(n)) => framer.push(&chunk[..n]),
            Ok(Err(error)) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
