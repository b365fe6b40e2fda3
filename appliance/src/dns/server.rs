//! The DNS listeners: one UDP loop per socket and one TCP accept loop per
//! listener, both answering through `wire::respond` against the newest
//! `PoolView` (read per query; the `Arc` is cloned and the borrow dropped
//! before anything awaits).
//!
//! Bounded by construction: a UDP socket is served by one task that answers
//! each batch of datagrams (a fixed set of buffers) before reading the next,
//! so a flood costs only the kernel's socket buffer (excess datagrams are
//! dropped there); its queries pass the response-rate limiter every UDP
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

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::DnsStats;
use super::fast::{self, FastAnswers, FastCache};
use super::rrl::{self, Limiter, Verdict};
use super::wire::{self, Outcome, Transport};
use crate::net;
use crate::state::PoolView;

/// Largest datagram we read; larger ones are truncated by the kernel and then
/// fail to parse (FORMERR), which is the right answer for them anyway.
const UDP_BUFFER: usize = 4096;
/// Datagrams received (and answered) per batch.
const UDP_BATCH: usize = 64;
/// Batches taken back to back before waiting on readiness again.
const UDP_DRAIN_BATCHES: usize = 8;

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

/// Serve DNS over one UDP socket until `shutdown`, with up to one worker
/// task per core (`net::udp_workers`) sharing the socket, so every core can
/// answer: one task is one core at a time. One socket rather than one per
/// worker (`SO_REUSEPORT`): the kernel spreads reuse-port sockets by source
/// address and port, so a few busy resolvers would land on one worker.
///
/// Only the first worker waits on the socket. The others are helpers that
/// wait to be called: a worker whose receive came back full (more is
/// queued) calls one. Every worker waiting on the socket's readiness woke
/// for every datagram and took a share of the batch, which cost each query
/// more CPU: with two on two cores shared with dnsperf, 0.88x NSD against
/// 1.32x with one (decision 1203).
pub(crate) async fn serve_udp(
    socket: UdpSocket,
    views: watch::Receiver<Arc<PoolView>>,
    cache: Arc<FastCache>,
    stats: Arc<DnsStats>,
    limiter: Arc<Mutex<Limiter>>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let help = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..net::udp_workers() {
        let wait = if index == 0 {
            UdpWait::Readable
        } else {
            UdpWait::Called
        };
        tasks.spawn(udp_worker(
            Arc::clone(&socket),
            UdpCrew {
                wait,
                help: Arc::clone(&help),
            },
            views.clone(),
            Arc::clone(&cache),
            Arc::clone(&stats),
            Arc::clone(&limiter),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// What a UDP worker waits on before it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpWait {
    /// The socket's readiness (the first worker).
    Readable,
    /// A call for help from a worker whose batch came back full.
    Called,
}

/// A UDP worker's place among the workers of its socket.
#[derive(Debug)]
struct UdpCrew {
    wait: UdpWait,
    /// Where a full batch calls a helper.
    help: Arc<Notify>,
}

/// One worker of a UDP socket. Datagrams are received and answered in
/// batches (`recvmmsg`/`sendmmsg`): two system calls per batch instead of
/// two per query, which is what keeps pace with NSD. A full batch calls one
/// helper (see `serve_udp`).
async fn udp_worker(
    socket: Arc<UdpSocket>,
    crew: UdpCrew,
    views: watch::Receiver<Arc<PoolView>>,
    cache: Arc<FastCache>,
    stats: Arc<DnsStats>,
    limiter: Arc<Mutex<Limiter>>,
    shutdown: CancellationToken,
) {
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; UDP_BUFFER]; UDP_BATCH];
    let mut rng = SmallRng::from_os_rng();
    let mut batches_left = 0;
    loop {
        // Under load, drain several batches before waiting on readiness
        // (and shutdown) again; the bound keeps shutdown prompt and lets
        // other tasks on the runtime run.
        if batches_left == 0 {
            let turn = async {
                match crew.wait {
                    UdpWait::Readable => socket.readable().await,
                    UdpWait::Called => {
                        crew.help.notified().await;
                        Ok(())
                    }
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                ready = turn => if let Err(error) = ready {
                    tracing::debug!(%error, "UDP socket not readable");
                    continue;
                },
            }
            batches_left = UDP_DRAIN_BATCHES;
        }
        batches_left -= 1;
        // The headers hold raw pointers (not `Send`), so they live only
        // inside the synchronous system-call closures.
        let received = socket.try_io(Interest::READABLE, || {
            let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            let results = recvmmsg(
                fd,
                &mut receive_headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(std::io::Error::from)?;
            Ok(results
                .map(|message| (message.bytes, message.address))
                .collect::<Vec<_>>())
        });
        let received = match received {
            Ok(received) => received,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                batches_left = 0;
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here on Linux;
                // they concern one peer, never the socket.
                tracing::debug!(%error, "UDP receive failed");
                batches_left = 0;
                continue;
            }
        };
        if received.len() == UDP_BATCH {
            crew.help.notify_one();
        }
        let mut replies: Vec<(Vec<u8>, SockaddrStorage, SocketAddr)> =
            Vec::with_capacity(received.len());
        let view = Arc::clone(&views.borrow());
        let answers = cache.for_view(&view);
        let peers: Vec<_> = received
            .into_iter()
            .map(|(length, address)| {
                (
                    length,
                    address.and_then(|a| socket_addr(&a).map(|p| (a, p))),
                )
            })
            .collect();
        // The limit comes first: a query over it costs no answer. One
        // limiter for every DNS socket (a source gets the rate once, not
        // once per address), locked once per batch.
        let verdicts: Vec<Verdict> = {
            let mut limiter = limiter.lock().unwrap_or_else(|p| p.into_inner());
            limiter.set_limits(rrl_limits(&view.config.dns));
            let now = std::time::Instant::now();
            peers
                .iter()
                .map(|(_, peer)| match peer {
                    Some((_, peer)) => limiter.check(peer.ip(), now),
                    None => Verdict::Drop,
                })
                .collect()
        };
        for ((buffer, (length, address)), verdict) in buffers.iter().zip(peers).zip(verdicts) {
            let Some((storage, peer)) = address else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if verdict == Verdict::Drop {
                stats.queries.fetch_add(1, Ordering::Relaxed);
                stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let packet = &buffer[..length.min(UDP_BUFFER)];
            let outcome = answer(packet, &view, &answers, Transport::Udp, &mut rng);
            let Some(bytes) = stats.count(outcome, peer) else {
                continue;
            };
            if verdict == Verdict::Slip {
                stats.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                if let Some(cut) = rrl::slipped(&bytes) {
                    replies.push((cut, storage, peer));
                }
            } else {
                replies.push((bytes, storage, peer));
            }
        }
        drop(answers);
        drop(view);
        let sent = if replies.is_empty() {
            0
        } else {
            let slices: Vec<[IoSlice<'_>; 1]> = replies
                .iter()
                .map(|(bytes, _, _)| [IoSlice::new(bytes)])
                .collect();
            let addresses: Vec<Option<SockaddrStorage>> = replies
                .iter()
                .map(|(_, storage, _)| Some(*storage))
                .collect();
            let no_control: [ControlMessage<'_>; 0] = [];
            socket
                .try_io(Interest::WRITABLE, || {
                    let mut send_headers =
                        MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
                    sendmmsg(
                        fd,
                        &mut send_headers,
                        &slices,
                        &addresses,
                        no_control,
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map(Iterator::count)
                    .map_err(std::io::Error::from)
                })
                .unwrap_or(0)
        };
        // Whatever the batch send did not take (a full socket buffer, one
        // unreachable peer) goes out one by one.
        for (bytes, _, peer) in replies.iter().skip(sent) {
            if let Err(error) = socket.send_to(bytes, peer).await {
                stats.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %error, "UDP send failed");
            }
        }
    }
}

/// The response-rate limit `[dns]` asks for.
pub(crate) fn rrl_limits(settings: &crate::config::DnsSettings) -> rrl::Limits {
    rrl::Limits::per_second(settings.rrl_rate, settings.rrl_slip)
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
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
