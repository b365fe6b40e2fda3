//! The DNS responder: authoritative answers for the configured zones, with
//! pool FQDNs and aliases answered from live health and admin state.
//!
//! Layers, innermost first: `answer` (pure: a `PoolView` and one question →
//! sections and response code), `wire` (pure: request bytes → response bytes,
//! EDNS, truncation, error codes; the fuzz target's entry point), `fast` (pure:
//! the hot names' answers encoded once per generation, equal to what `wire`
//! would say), `rrl` (pure: response-rate limiting per source prefix, for
//! the UDP listeners of DNS and SIP), `server`
//! (the UDP and TCP listeners, bounded in memory), and `fail_open` (one event
//! in the event log per fail-open episode of a pool). `delegation` prints the
//! records a parent zone needs to delegate a zone to poolgate.
//!
//! Every `listen.dns` address gets a UDP socket and a TCP listener on the same
//! port (with port 0, TCP takes the port UDP was given), each logging its
//! `listening` line as `dns-udp` / `dns-tcp`. Which addresses are open, as
//! the config changes, is `listeners`' business; a [`Responder`] serves
//! each pair it opens.

pub(crate) mod answer;
pub mod delegation;
pub(crate) mod fail_open;
pub(crate) mod fast;
pub mod rrl;
pub mod server;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Kind, MetricsWriter, Render};
use crate::net;
use crate::state::PoolView;

pub use server::TcpLimits;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Bind(#[from] net::BindError),
}

/// Counters of the DNS listeners (shared by all sockets).
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Packets received (UDP datagrams and TCP messages).
    pub queries: AtomicU64,
    /// Answered FORMERR.
    pub malformed: AtomicU64,
    /// Received and not answered (too short, or not a query).
    pub dropped: AtomicU64,
    /// UDP answers cut to header + question with TC set.
    pub truncated: AtomicU64,
    /// Answers the network did not take.
    pub send_errors: AtomicU64,
    /// UDP answers over the response-rate limit, not sent.
    pub rrl_dropped: AtomicU64,
    /// UDP answers over the response-rate limit, sent empty with TC set.
    pub rrl_slipped: AtomicU64,
    /// Answers sent or offered, by kind.
    pub answers: AnswerCounts,
    /// The accept layer's gates, where the `dns-tcp` listeners' gate lives;
    /// its refusals are also `poolgate_dns_tcp_rejected_total`.
    pub gates: Arc<net::Registry>,
}

/// Answers by what they said: records, no data, no such name, refused,
/// server failure, or another code (FORMERR, NOTAUTH, NOTIMP).
#[derive(Debug, Default)]
pub struct AnswerCounts {
    pub data: AtomicU64,
    pub nodata: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
    pub servfail: AtomicU64,
    pub other: AtomicU64,
}

impl AnswerCounts {
    /// Each kind's name (as the metrics label it) and its count.
    pub(crate) fn by_kind(&self) -> [(&'static str, u64); 6] {
        let Self {
            data,
            nodata,
            nxdomain,
            refused,
            servfail,
            other,
        } = self;
        [
            ("data", data),
            ("nodata", nodata),
            ("nxdomain", nxdomain),
            ("refused", refused),
            ("servfail", servfail),
            ("other", other),
        ]
        .map(|(kind, count)| (kind, count.load(Ordering::Relaxed)))
    }

    /// Count one answer: its code and, from its header, whether it holds
    /// records.
    pub(crate) fn count(&self, rcode: hickory_proto::op::ResponseCode, answer: &[u8]) {
        use hickory_proto::op::ResponseCode;
        let counter = match rcode {
            ResponseCode::NoError => {
                // ANCOUNT is bytes 6..8 of the header.
                let records = answer.get(6..8).is_some_and(|n| n != [0, 0]);
                if records { &self.data } else { &self.nodata }
            }
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            ResponseCode::ServFail => &self.servfail,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl DnsStats {
    /// TCP connections closed at once because a cap was reached: the
    /// refusals (either reason) of the `dns-tcp` gate, counted once, there.
    pub(crate) fn tcp_rejected(&self) -> u64 {
        self.gates.refused(&["dns-tcp"])
    }
}

impl Render for DnsStats {
    fn render(&self, out: &mut MetricsWriter) {
        let Self {
            queries,
            malformed,
            dropped,
            truncated,
            send_errors,
            rrl_dropped,
            rrl_slipped,
            answers,
            // Rendered with every other listener's gate by the registry, and
            // read here for `poolgate_dns_tcp_rejected_total`.
            gates: _,
        } = self;
        for (name, help, value) in [
            (
                "poolgate_dns_queries_total",
                "DNS queries received.",
                queries,
            ),
            (
                "poolgate_dns_malformed_total",
                "DNS queries answered FORMERR.",
                malformed,
            ),
            (
                "poolgate_dns_dropped_total",
                "DNS packets dropped unanswered.",
                dropped,
            ),
            (
                "poolgate_dns_truncated_total",
                "DNS answers truncated (TC) over UDP.",
                truncated,
            ),
            (
                "poolgate_dns_send_errors_total",
                "DNS answers the network did not take.",
                send_errors,
            ),
            (
                "poolgate_dns_rrl_dropped_total",
                "DNS UDP answers over the response-rate limit, not sent.",
                rrl_dropped,
            ),
            (
                "poolgate_dns_rrl_slipped_total",
                "DNS UDP answers over the response-rate limit, sent empty with TC.",
                rrl_slipped,
            ),
        ] {
            out.counter(name, help, value);
        }
        let mut by_kind = out.family(
            "poolgate_dns_answers_total",
            Kind::Counter,
            "DNS answers by kind: data, nodata, nxdomain, refused, servfail, other.",
        );
        for (kind, count) in answers.by_kind() {
            by_kind.sample(&[("kind", kind)], count);
        }
        // Published before the accept layer's per-listener families; kept
        // under its name, read from the `dns-tcp` gate.
        out.family(
            "poolgate_dns_tcp_rejected_total",
            Kind::Counter,
            "DNS TCP connections refused over the cap.",
        )
        .sample(&[], self.tcp_rejected());
    }
}

/// Bound sockets, ready to serve.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

/// How many times a port-0 address retries when the port UDP got is taken
/// for TCP.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// Bind UDP and TCP on every address, logging one `listening` line each.
#[cfg(test)]
pub(crate) async fn bind(addresses: &[SocketAddr]) -> Result<Listeners, DnsError> {
    let mut listeners = Listeners {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for &address in addresses {
        let (udp, tcp) = bind_address(address).await?;
        listeners.udp.push(udp);
        listeners.tcp.push(tcp);
    }
    Ok(listeners)
}

/// Bind the UDP socket and TCP listener of one `listen.dns` address (with
/// port 0, TCP on the port UDP got), logging their `listening` lines.
pub(crate) async fn bind_address(
    address: SocketAddr,
) -> Result<(UdpSocket, TcpListener), DnsError> {
    let (udp, tcp) = bind_pair(address).await?;
    Ok((
        net::listening("dns-udp", address, Ok(udp))?,
        net::listening("dns-tcp", address, Ok(tcp))?,
    ))
}

async fn bind_pair(address: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = net::udp_socket(address)
            .map_err(|source| net::BindError::new("dns-udp", address, source))?;
        let mut tcp_address = address;
        if address.port() == 0 {
            // Clients retry a truncated UDP answer over TCP on the same port.
            let port = udp
                .local_addr()
                .map_err(|source| net::BindError::new("dns-udp", address, source))?
                .port();
            tcp_address.set_port(port);
        }
        match net::tcp_listener(tcp_address) {
            Err(_) if address.port() == 0 && attempt < PORT_ZERO_ATTEMPTS => continue,
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => return Err(net::BindError::new("dns-tcp", tcp_address, source).into()),
        }
    }
}

/// What every DNS socket answers with: the views, the hot names' cache and
/// the counters they share, and the TCP limits.
#[derive(Debug, Clone)]
pub(crate) struct Responder {
    pub views: watch::Receiver<Arc<PoolView>>,
    pub cache: Arc<fast::FastCache>,
    pub stats: Arc<DnsStats>,
    pub limits: TcpLimits,
    /// Response-rate limiting shared by every UDP socket.
    pub udp_limiter: Arc<std::sync::Mutex<rrl::Limiter>>,
}

impl Responder {
    pub(crate) fn new(
        views: watch::Receiver<Arc<PoolView>>,
        stats: Arc<DnsStats>,
        limits: TcpLimits,
    ) -> Self {
        let udp_limiter = rrl::Limiter::new(server::rrl_limits(&views.borrow().config.dns));
        Self {
            views,
            cache: Arc::new(fast::FastCache::default()),
            stats,
            limits,
            udp_limiter: Arc::new(std::sync::Mutex::new(udp_limiter)),
        }
    }

    /// Serve one UDP socket until `stop`.
    pub(crate) fn serve_udp(
        &self,
        socket: UdpSocket,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        server::serve_udp(
            socket,
            self.views.clone(),
            Arc::clone(&self.cache),
            Arc::clone(&self.stats),
            Arc::clone(&self.udp_limiter),
            stop,
        )
    }

    /// Serve one TCP listener until `stop`; its connections end with it.
    pub(crate) fn serve_tcp(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        server::serve_tcp(
            listener,
            self.views.clone(),
            Arc::clone(&self.cache),
            Arc::clone(&self.stats),
            self.limits,
            stop,
        )
    }
}

/// Serve on `listeners` and record fail-open episodes in `events`, until
/// `shutdown`. Returns the tasks; they all end when `shutdown` is cancelled.
#[cfg(test)]
pub(crate) fn spawn(
    listeners: Listeners,
    views: watch::Receiver<Arc<PoolView>>,
    events: crate::events::EventLog,
    stats: Arc<DnsStats>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let responder = Responder::new(views.clone(), stats, limits);
    for socket in listeners.udp {
        tasks.spawn(responder.serve_udp(socket, shutdown.clone()));
    }
    for listener in listeners.tcp {
        tasks.spawn(responder.serve_tcp(listener, shutdown.clone()));
    }
    tasks.spawn(fail_open::watch(views, events, shutdown));
    tasks
}

#[cfg(test)]
mod tests;
