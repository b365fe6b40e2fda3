//! The DNS listeners: one UDP loop per socket and one TCP accept loop per
//! listener, both answering through `wire::respond` against the newest
//! `PoolView` (read per query; the `Arc` is cloned and the borrow dropped
//! before anything awaits).
//!
//! Bounded by construction: a UDP socket is served by `net::datagrams`,
//! whose workers answer each batch of datagrams (a fixed set of buffers)
//! before reading the next, so a flood costs only the kernel's socket
//! buffer (excess datagrams are dropped there); its queries pass the response-rate limiter every UDP
//! socket shares (`rrl`, `[dns] rrl_rate`/`rrl_slip`; a source gets the
//! rate once, however many addresses DNS listens on) before they are
//! answered, so
//! poolgate cannot be used to reflect traffic at a spoofed source and a
//! query over the rate costs no answer (one that is slipped is answered,
//! then cut to an empty truncated one); TCP connections go through the
//! accept layer (`net`):
//! capped in total and per source, and at a cap the connection idle longest
//! is closed for the new one (RFC 7766 §6.2.3) or, if none has been idle
//! long enough, the new one is closed at once; each connection has an idle
//! timeout and a per-message read/write deadline, so a slow or silent
//! client cannot pin a slot forever, and many holders cannot lock out a
//! newcomer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::DnsStats;
use super::fast::{self, FastAnswers, FastCache};
use super::rrl::{self, Limiter, Verdict};
use super::wire::{self, Outcome, Transport};
use crate::net::{self, datagrams, datagrams::Datagram};
use crate::state::PoolView;

/// Largest datagram we read; larger ones are truncated by the kernel and then
/// fail to parse (FORMERR), which is the right answer for them anyway.
const UDP_BUFFER: usize = 4096;

/// Limits of the TCP listener (RFC 7766 §6.2).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections served at once across the `dns-tcp` listeners.
    pub max_connections: usize,
    /// Connections served at once from one source address.
    pub max_per_source: usize,
    /// How long a connection may sit between messages.
    pub idle_timeout: Duration,
    /// How long reading the rest of a message or writing an answer may take.
    pub io_timeout: Duration,
    /// At a cap, a connection idle at least this long is closed to make
    /// room for the new one (RFC 7766 §6.2.3: under pressure, close idle
    /// connections); one idle for less may be about to send its next query.
    pub evict_idle_after: Option<Duration>,
}

impl Default for TcpLimits {
    fn default() -> Self {
        let gate = net::Limits::dns();
        Self {
            max_connections: gate.max_connections,
            max_per_source: gate.max_per_source,
            // RFC 7766 suggests seconds, not minutes, for an idle DNS/TCP connection.
            idle_timeout: gate.idle_timeout,
            io_timeout: Duration::from_secs(5),
            evict_idle_after: gate.evict_idle_after,
        }
    }
}

impl TcpLimits {
    fn gate(self) -> net::Limits {
        net::Limits {
            max_connections: self.max_connections,
            max_per_source: self.max_per_source,
            idle_timeout: self.idle_timeout,
            header_timeout: self.io_timeout,
            evict_idle_after: self.evict_idle_after,
            ..net::Limits::dns()
        }
    }
}

/// Serve DNS over one UDP socket until `shutdown`, in batches, with up to
/// one worker per core of which only the first waits on the socket
/// (`net::datagrams`).
pub(crate) async fn serve_udp(
    socket: UdpSocket,
    views: watch::Receiver<Arc<PoolView>>,
    cache: Arc<FastCache>,
    stats: Arc<DnsStats>,
    limiter: Arc<Mutex<Limiter>>,
    shutdown: CancellationToken,
) {
    let answerer = |_| UdpAnswerer {
        views: views.clone(),
        cache: Arc::clone(&cache),
        stats: Arc::clone(&stats),
        limiter: Arc::clone(&limiter),
        rng: SmallRng::from_os_rng(),
    };
    datagrams::serve(socket, net::udp_workers(), UDP_BUFFER, answerer, shutdown).await;
}

/// What one UDP worker answers with.
struct UdpAnswerer {
    views: watch::Receiver<Arc<PoolView>>,
    cache: Arc<FastCache>,
    stats: Arc<DnsStats>,
    limiter: Arc<Mutex<Limiter>>,
    rng: SmallRng,
}

impl datagrams::Answerer for UdpAnswerer {
    fn answer(&mut self, batch: &[Datagram<'_>], replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
        let view = Arc::clone(&self.views.borrow());
        let answers = self.cache.for_view(&view);
        // The limit comes first: a query over it costs no answer. One
        // limiter for every DNS socket (a source gets the rate once, not
        // once per address), locked once per batch.
        let verdicts = datagrams::verdicts(&self.limiter, rrl_limits(&view.config.dns), batch);
        for (datagram, verdict) in batch.iter().zip(verdicts) {
            if verdict == Verdict::Drop {
                self.stats.queries.fetch_add(1, Ordering::Relaxed);
                self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let outcome = answer(
                datagram.bytes,
                &view,
                &answers,
                Transport::Udp,
                &mut self.rng,
            );
            let Some(bytes) = self.stats.count(outcome, datagram.peer) else {
                continue;
            };
            if verdict == Verdict::Slip {
                self.stats.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                if let Some(cut) = rrl::slipped(&bytes) {
                    replies.push((cut, datagram.peer));
                }
            } else {
                replies.push((bytes, datagram.peer));
            }
        }
    }

    fn unaddressed(&mut self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn send_failed(&mut self, peer: SocketAddr, error: &std::io::Error) {
        self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %error, "UDP send failed");
    }
}

/// The response-rate limit `[dns]` asks for.
pub(crate) fn rrl_limits(settings: &crate::config::DnsSettings) -> rrl::Limits {
    rrl::Limits::per_second(settings.rrl_rate, settings.rrl_slip)
}

/// Serve DNS over one TCP listener until `shutdown`. Connections still open
/// at shutdown are closed. Every `dns-tcp` listener of `stats` shares one
/// gate: a cap in total and per source; at a cap the connection idle
/// longest gives way if it has been idle long enough, else the new one is
/// closed at once.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    views: watch::Receiver<Arc<PoolView>>,
    cache: Arc<FastCache>,
    stats: Arc<DnsStats>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let mut listener = net::Listener::new(listener, stats.gates.gate("dns-tcp", limits.gate()));
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            conn = listener.accept() => conn,
        };
        let views = views.clone();
        let cache = Arc::clone(&cache);
        let stats = Arc::clone(&stats);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let net::Conn { stream, peer, slot } = conn;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = slot.evicted() => {
                    tracing::debug!(%peer, "Idle DNS TCP connection closed to make room");
                }
                () = serve_connection(stream, peer, &slot, views, &cache, &stats, limits) => {}
            }
        });
    }
}

/// Bytes asked of the kernel per read of a DNS TCP connection.
const TCP_READ_CHUNK: usize = 4096;
/// Answers gathered before they are written, when a client has pipelined
/// more queries than that (RFC 7766 §6.2.1.1).
const TCP_WRITE_BATCH: usize = 16 * 1024;

/// The length of the whole message at the front of `input` with its
/// two-byte length prefix, once it has all arrived.
fn whole_message(input: &[u8]) -> Option<usize> {
    let prefix = input.get(..2)?;
    let framed = 2 + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    (input.len() >= framed).then_some(framed)
}

/// Answer the queries of one DNS TCP connection in order. Every query that
/// has arrived whole is answered before the next read, and their answers go
/// out in one write (up to `TCP_WRITE_BATCH`): a client that pipelines gets
/// one segment for several answers, and each read or write serves many
/// queries.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: &net::Slot,
    views: watch::Receiver<Arc<PoolView>>,
    cache: &FastCache,
    stats: &DnsStats,
    limits: TcpLimits,
) {
    let mut rng = SmallRng::from_os_rng();
    // Read and not yet answered: at most one message (2 + 65,535 bytes)
    // still arriving, plus one read.
    let mut input: Vec<u8> = Vec::new();
    let mut output: Vec<u8> = Vec::new();
    loop {
        let mut start = 0;
        if whole_message(&input).is_some() {
            // The newest view for this batch, its `Arc` cloned and the watch
            // borrow released before anything else happens.
            let view = Arc::clone(&views.borrow());
            let answers = cache.for_view(&view);
            while let Some(framed) = whole_message(&input[start..]) {
                let message = &input[start + 2..start + framed];
                start += framed;
                let outcome = answer(message, &view, &answers, Transport::Tcp, &mut rng);
                let Some(bytes) = stats.count(outcome, peer) else {
                    continue;
                };
                let Ok(length) = u16::try_from(bytes.len()) else {
                    // wire::respond never builds more than 65535 bytes for TCP.
                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                output.extend_from_slice(&length.to_be_bytes());
                output.extend_from_slice(&bytes);
                if output.len() >= TCP_WRITE_BATCH
                    && !send(&mut stream, &mut output, peer, stats, limits).await
                {
                    return;
                }
            }
        }
        input.drain(..start);
        if !output.is_empty() && !send(&mut stream, &mut output, peer, stats, limits).await {
            return;
        }
        // Between messages (less than a length prefix read) the connection
        // is idle: under pressure it may be closed for a new one. Within
        // one (marked busy by the read that began it), the rest must come
        // in time.
        let between = input.len() < 2;
        let wait = if between {
            slot.idle();
            limits.idle_timeout
        } else {
            limits.io_timeout
        };
        input.reserve(TCP_READ_CHUNK);
        match tokio::time::timeout(wait, stream.read_buf(&mut input)).await {
            Ok(Ok(n)) if n > 0 => {
                if between {
                    slot.busy();
                }
            }
            // Clean close or reset between messages: the connection is done.
            Ok(_) if between => return,
            Err(_) if between => {
                slot.timed_out(net::Timeout::Idle);
                return;
            }
            ended => {
                if ended.is_err() {
                    slot.timed_out(net::Timeout::Header);
                }
                tracing::debug!(%peer, "DNS TCP message cut short");
                return;
            }
        }
    }
}

/// Write the answers gathered in `output` and empty it; false if they could
/// not be delivered in time (counted).
async fn send(
    stream: &mut TcpStream,
    output: &mut Vec<u8>,
    peer: SocketAddr,
    stats: &DnsStats,
    limits: TcpLimits,
) -> bool {
    match tokio::time::timeout(limits.io_timeout, stream.write_all(output)).await {
        Ok(Ok(())) => {
            output.clear();
            true
        }
        Ok(Err(_)) | Err(_) => {
            stats.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "DNS TCP answer not delivered");
            false
        }
    }
}

/// Answer one message from `view`: the precomputed fast path (`answers`,
/// the cache's entry for `view`) when it applies, else the full one.
fn answer(
    packet: &[u8],
    view: &PoolView,
    answers: &FastAnswers,
    transport: Transport,
    rng: &mut SmallRng,
) -> Outcome {
    match fast::try_respond(packet, answers, transport, rng) {
        Some(bytes) => Outcome::Reply {
            bytes,
            rcode: hickory_proto::op::ResponseCode::NoError,
            truncated: false,
        },
        None => wire::respond(packet, view, transport, rng),
    }
}

impl DnsStats {
    /// Count one outcome; the bytes to send, if any.
    fn count(&self, outcome: Outcome, peer: SocketAddr) -> Option<Vec<u8>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Reply {
                bytes,
                rcode,
                truncated,
            } => {
                if truncated {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
                self.answers.count(rcode, &bytes);
                if rcode == hickory_proto::op::ResponseCode::FormErr {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "Malformed DNS query; answered FORMERR");
                }
                Some(bytes)
            }
            Outcome::Silent(reason) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, ?reason, "DNS packet dropped");
                None
            }
        }
    }
}
