//! The async half of the accept layer: [`Listener`] accepts, admits or
//! refuses through its [`Gate`] (the pure `Table` behind a lock, a copy of
//! its limits readable without that lock, and the counters), and hands out
//! connections that each hold a [`Slot`] for as long as they live. [`Tracked`] wraps a connection's stream to note when
//! bytes last moved (for idle timeouts) and to keep its first TLS record
//! (for [`super::sni`]).
//!
//! Invariants: a refused connection is closed at once with a reset, before
//! anything is read from it, so a flood at the cap costs one accept and one
//! close per connection and never spins; `open` in the counters is the
//! number of live `Slot`s; an accept error that more accepting cannot fix
//! (no descriptors) pauses accepting with a back-off instead of spinning.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NetError;
use super::limits::{Admission, Backoff, Limits, LogLimit, Refusal, Table, is_resource_exhaustion};
use super::sni::{self, Sni};
use crate::metrics::{Kind, MetricsWriter, Render};

/// A deadline a connection missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    Handshake,
    Header,
    Idle,
}

impl Timeout {
    pub(crate) const ALL: [Self; 3] = [Self::Handshake, Self::Header, Self::Idle];

    /// The `kind` label in metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Header => "header",
            Self::Idle => "idle",
        }
    }
}

/// Counters of one listener (or of all listeners sharing a label).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub accepted: AtomicU64,
    pub refused_total: AtomicU64,
    pub refused_source: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    pub timeout_handshake: AtomicU64,
    pub timeout_header: AtomicU64,
    pub timeout_idle: AtomicU64,
    /// Accept calls that failed (out of descriptors, aborted connections).
    pub accept_errors: AtomicU64,
    /// TLS clients that sent an IP address or a malformed name as SNI.
    pub illegal_sni: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// One reading of a gate's [`Stats`], for rendering.
#[derive(Debug, Clone, Copy)]
struct Values {
    accepted: u64,
    refused_total: u64,
    refused_source: u64,
    evicted: u64,
    timeout_handshake: u64,
    timeout_header: u64,
    timeout_idle: u64,
    accept_errors: u64,
    illegal_sni: u64,
    open: u64,
}

impl Stats {
    /// Every counter, read once. Every field is named, so a new counter
    /// must be given a place in `Values` (and in the rendering) to compile.
    fn values(&self) -> Values {
        let Self {
            accepted,
            refused_total,
            refused_source,
            evicted,
            timeout_handshake,
            timeout_header,
            timeout_idle,
            accept_errors,
            illegal_sni,
            open,
        } = self;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Values {
            accepted: load(accepted),
            refused_total: load(refused_total),
            refused_source: load(refused_source),
            evicted: load(evicted),
            timeout_handshake: load(timeout_handshake),
            timeout_header: load(timeout_header),
            timeout_idle: load(timeout_idle),
            accept_errors: load(accept_errors),
            illegal_sni: load(illegal_sni),
            open: load(open),
        }
    }

    pub(crate) fn refused(&self, why: Refusal) -> &AtomicU64 {
        match why {
            Refusal::Total => &self.refused_total,
            Refusal::PerSource => &self.refused_source,
        }
    }

    pub(crate) fn timeouts(&self, kind: Timeout) -> &AtomicU64 {
        match kind {
            Timeout::Handshake => &self.timeout_handshake,
            Timeout::Header => &self.timeout_header,
            Timeout::Idle => &self.timeout_idle,
        }
    }
}

/// The limits, open connections and counters of one label: every listener
/// with that label (a virtual service's ports, several DNS addresses)
/// shares its caps.
#[derive(Debug)]
pub(crate) struct Gate {
    label: String,
    pub stats: Stats,
    /// A copy of the table's limits, read for every connection's deadlines
    /// without taking the table's lock; written only together with the
    /// table's, under that lock (see [`Gate::set_limits`]).
    limits: RwLock<Limits>,
    table: Mutex<Table<CancellationToken>>,
}

impl Gate {
    pub(crate) fn new(label: impl Into<String>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            label: label.into(),
            stats: Stats::default(),
            limits: RwLock::new(limits),
            table: Mutex::new(Table::new(limits)),
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn limits(&self) -> Limits {
        // Only `set_limits` writes, and it cannot panic while holding it.
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// New limits for the connections admitted from now on; open ones keep
    /// their slots even over a lowered cap, so it takes effect as they
    /// close.
    fn set_limits(&self, limits: Limits) {
        let mut table = self.table();
        table.set_limits(limits);
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table<CancellationToken>> {
        // The table's operations cannot panic half-way; a poisoned lock
        // still holds a consistent table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a connection from `peer`, or say why not.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, Refusal> {
        let token = CancellationToken::new();
        let admission = self
            .table()
            .admit(peer.ip(), token.clone(), Instant::now().into_std());
        match admission {
            Admission::Admitted { id, evicted } => {
                if let Some(evicted) = evicted {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    evicted.cancel();
                }
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                self.stats.open.fetch_add(1, Ordering::Relaxed);
                Ok(Slot {
                    gate: Arc::clone(self),
                    id,
                    evicted: token,
                })
            }
            Admission::Refused(why) => {
                self.stats.refused(why).fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
        }
    }
}

/// Every gate of the process by label, for `/metrics`.
#[derive(Debug, Default)]
pub struct Registry {
    gates: Mutex<BTreeMap<String, Arc<Gate>>>,
}

impl Registry {
    /// The gate of `label`, made with `limits` on first use. A gate that
    /// exists takes `limits` if they differ (a virtual service whose idle
    /// timeout changed, listened on again), so the latest caller's limits
    /// are the ones in force for every listener of the label.
    pub(crate) fn gate(&self, label: &str, limits: Limits) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let gate = gates
            .entry(label.to_owned())
            .or_insert_with(|| Gate::new(label, limits));
        if gate.limits() != limits {
            tracing::debug!(listener = label, ?limits, "Listener limits changed");
            gate.set_limits(limits);
        }
        Arc::clone(gate)
    }

    /// Every gate, by label.
    pub(crate) fn gates(&self) -> Vec<Arc<Gate>> {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.values().cloned().collect()
    }

    /// Connections refused at accept (either reason) by the gates of
    /// `labels`, in all.
    pub(crate) fn refused(&self, labels: &[&str]) -> u64 {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        labels
            .iter()
            .filter_map(|label| gates.get(*label))
            .map(|gate| {
                Refusal::ALL
                    .iter()
                    .map(|&why| gate.stats.refused(why).load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum()
    }
}

/// The counters of every gate, one sample per listener label.
impl Render for Registry {
    fn render(&self, out: &mut MetricsWriter) {
        let gates = self.gates();
        let samples: Vec<_> = gates
            .iter()
            .map(|gate| (gate.label(), gate.stats.values()))
            .collect();
        for (name, kind, help, field) in FAMILIES {
            let mut family = out.family(name, kind, help);
            for (label, values) in &samples {
                for (second, value) in field(values) {
                    match second {
                        Some(second) => family.sample(&[("listener", label), second], value),
                        None => family.sample(&[("listener", label)], value),
                    };
                }
            }
        }
    }
}

/// A second label's name and value, if the family has one, and the sample.
type Samples = Vec<(Option<(&'static str, &'static str)>, u64)>;

/// One sample per value of a second label `name`.
fn by<K: Copy>(
    name: &'static str,
    keys: &[K],
    text: fn(K) -> &'static str,
    value: impl Fn(K) -> u64,
) -> Samples {
    keys.iter()
        .map(|&key| (Some((name, text(key))), value(key)))
        .collect()
}

/// A family's name, kind and help, and how its samples are read from one
/// listener's values.
type Family = (&'static str, Kind, &'static str, fn(&Values) -> Samples);

/// Every family of the accept layer: one sample per listener label (and
/// per value of a second label where there is one).
const FAMILIES: [Family; 7] = [
    (
        "poolgate_listener_accepted_total",
        Kind::Counter,
        "TCP connections admitted by the accept layer.",
        |v| vec![(None, v.accepted)],
    ),
    (
        "poolgate_listener_refused_total",
        Kind::Counter,
        "TCP connections closed at accept: the listener's cap (total) or the source's (source).",
        |v| {
            by("reason", &Refusal::ALL, Refusal::as_str, |why| match why {
                Refusal::Total => v.refused_total,
                Refusal::PerSource => v.refused_source,
            })
        },
    ),
    (
        "poolgate_listener_evicted_total",
        Kind::Counter,
        "Idle TCP connections closed to make room for a new one.",
        |v| vec![(None, v.evicted)],
    ),
    (
        "poolgate_listener_timeouts_total",
        Kind::Counter,
        "TCP connections closed for missing a deadline, by kind.",
        |v| {
            by("kind", &Timeout::ALL, Timeout::as_str, |kind| match kind {
                Timeout::Handshake => v.timeout_handshake,
                Timeout::Header => v.timeout_header,
                Timeout::Idle => v.timeout_idle,
            })
        },
    ),
    (
        "poolgate_listener_accept_errors_total",
        Kind::Counter,
        "Failed accept calls (out of file descriptors and the like).",
        |v| vec![(None, v.accept_errors)],
    ),
    (
        "poolgate_listener_illegal_sni_total",
        Kind::Counter,
        "TLS handshakes whose server name was an IP address or malformed.",
        |v| vec![(None, v.illegal_sni)],
    ),
    (
        "poolgate_listener_open_connections",
        Kind::Gauge,
        "TCP connections open now.",
        |v| vec![(None, v.open)],
    ),
];

/// An admitted connection's place in its gate, released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<Gate>,
    id: u64,
    evicted: CancellationToken,
}

impl Slot {
    pub(crate) fn limits(&self) -> Limits {
        self.gate.limits()
    }

    /// The connection waits for its peer: it may be evicted under pressure.
    pub(crate) fn idle(&self) {
        mark(&self.gate, self.id, true);
    }

    /// The connection works on something: it is not evicted.
    pub(crate) fn busy(&self) {
        mark(&self.gate, self.id, false);
    }

    /// A handle that marks this connection idle or busy from elsewhere
    /// (a request handler, when its last request ends or one begins).
    pub(crate) fn marker(&self) -> IdleMarker {
        IdleMarker {
            gate: Arc::clone(&self.gate),
            id: self.id,
        }
    }

    /// Resolves when the gate closed this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.evicted.cancelled().await;
    }

    /// Count a missed deadline.
    pub(crate) fn timed_out(&self, kind: Timeout) {
        self.gate
            .stats
            .timeouts(kind)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Count and log what the client sent as TLS server name, if illegal.
    pub(crate) fn note_sni(&self, peer: SocketAddr, first_record: &[u8]) {
        let sni = sni::classify(first_record);
        if sni.is_illegal() {
            self.gate.stats.illegal_sni.fetch_add(1, Ordering::Relaxed);
            let name = match &sni {
                Sni::IpAddress(name) | Sni::Invalid(name) => name.as_str(),
                Sni::Absent | Sni::HostName(_) | Sni::Unknown => "",
            };
            tracing::debug!(listener = self.gate.label(), %peer, server_name = ?name, "Illegal TLS server name ignored");
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.table().release(self.id);
        self.gate.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks an admitted connection idle (evictable under pressure) or busy;
/// a no-op once the connection is gone.
#[derive(Debug, Clone)]
pub(crate) struct IdleMarker {
    gate: Arc<Gate>,
    id: u64,
}

impl IdleMarker {
    /// Mark the connection idle unless a request is in flight on it by the
    /// time the gate's table is locked. A request counts itself in
    /// `in_flight` before it marks the connection busy, so one that began
    /// while its predecessor ended is either seen here (the connection
    /// stays busy) or marks it busy after this, never before.
    pub(crate) fn idle_unless_in_flight(&self, in_flight: &AtomicU64) {
        let mut table = self.gate.table();
        if in_flight.load(Ordering::SeqCst) == 0 {
            table.set_idle(self.id, Some(Instant::now().into_std()));
        }
    }

    pub(crate) fn busy(&self) {
        mark(&self.gate, self.id, false);
    }
}

/// Mark connection `id` of `gate` idle since now (it may be evicted under
/// pressure) or busy (it is not).
fn mark(gate: &Gate, id: u64, idle: bool) {
    gate.table()
        .set_idle(id, idle.then(|| Instant::now().into_std()));
}

/// An admitted connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: Slot,
}

/// A TCP listener behind a gate.
pub(crate) struct Listener {
    listener: TcpListener,
    gate: Arc<Gate>,
    backoff: Backoff,
    /// One WARN a minute while accepts fail for lack of resources.
    warn: LogLimit,
}

/// How often running out of descriptors is logged at WARN (it is counted
/// every time).
const WARN_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("listener", &self.listener)
            .field("gate", &self.gate.label())
            .finish_non_exhaustive()
    }
}

impl Listener {
    pub(crate) fn new(listener: TcpListener, gate: Arc<Gate>) -> Self {
        Self {
            listener,
            gate,
            backoff: Backoff::default(),
            warn: LogLimit::new(WARN_EVERY),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next admitted connection. Refused ones are reset here; failed
    /// accepts are counted and, when the process is out of descriptors,
    /// waited out with a growing pause. Cancel-safe.
    pub(crate) async fn accept(&mut self) -> Conn {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff.succeeded();
                    match self.gate.admit(peer) {
                        Ok(slot) => return Conn { stream, peer, slot },
                        Err(why) => {
                            // A reset, so the client knows at once and no
                            // TIME_WAIT is left behind on this side.
                            let _ = stream.set_zero_linger();
                            drop(stream);
                            tracing::debug!(listener = self.gate.label(), %peer, reason = why.as_str(), "Connection refused at the cap");
                        }
                    }
                }
                Err(error) => {
                    self.gate
                        .stats
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if is_resource_exhaustion(&error) {
                        let pause = self.backoff.failed();
                        if self.warn.allow(Instant::now().into_std()) {
                            tracing::warn!(listener = self.gate.label(), %error, pause_ms = pause.as_millis() as u64, "Accept failed for lack of resources; pausing accepts (logged once a minute)");
                        }
                        tokio::time::sleep(pause).await;
                    } else {
                        tracing::debug!(listener = self.gate.label(), %error, "Accept failed");
                    }
                }
            }
        }
    }
}

/// When bytes last moved on a connection, shared with its watchdog (the
/// accept layer's idle deadline, the proxy relay's idle timeout).
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    /// Requests being handled (their response not yet started): a
    /// connection waiting on the server is not idle.
    pub in_flight: AtomicU64,
    /// Requests started so far.
    pub requests: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Bytes moved just now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has moved for `idle` while no request was in
    /// flight.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let due = self.last() + idle;
            let now = Instant::now();
            if now < due {
                tokio::time::sleep_until(due).await;
            } else if self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            } else {
                // Silent while the server works on a request: look again
                // later rather than at every tick.
                tokio::time::sleep(idle.min(Duration::from_secs(1))).await;
            }
        }
    }

    /// Resolves at `deadline` if no request has started by then.
    pub(crate) async fn no_request_by(&self, deadline: Instant) {
        tokio::time::sleep_until(deadline).await;
        if self.requests.load(Ordering::Relaxed) > 0 {
            std::future::pending::<()>().await;
        }
    }
}

/// A stream that notes activity and keeps the first TLS record it reads.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The first bytes read, until they hold the first record.
    first: Option<Vec<u8>>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>, keep_first_record: bool) -> Self {
        activity.touch();
        Self {
            inner,
            activity,
            first: keep_first_record.then(Vec::new),
        }
    }

    /// The first record read so far (whole or not), no longer kept after.
    pub(crate) fn take_first_record(&mut self) -> Vec<u8> {
        self.first.take().unwrap_or_default()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            self.activity.touch();
            if let Some(first) = self.first.as_mut() {
                let room = sni::MAX_RECORD.saturating_sub(first.len());
                first.extend_from_slice(&new[..new.len().min(room)]);
                if let Some(whole) = sni::first_record_len(first) {
                    first.truncate(whole);
                }
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A TLS handshake under the gate's handshake deadline, counted; the
/// client's illegal server name, if any, counted and logged at debug.
pub(crate) async fn tls_handshake<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    peer: SocketAddr,
    slot: &Slot,
    activity: &Arc<Activity>,
) -> Result<tokio_rustls::server::TlsStream<Tracked<S>>, NetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tracked = Tracked::new(stream, Arc::clone(activity), true);
    let handshake = acceptor.accept(tracked).into_fallible();
    match tokio::time::timeout(slot.limits().handshake_timeout, handshake).await {
        Err(_) => {
            slot.timed_out(Timeout::Handshake);
            Err(NetError::HandshakeTimeout)
        }
        Ok(Err((error, mut tracked))) => {
            slot.note_sni(peer, &tracked.take_first_record());
            Err(NetError::Handshake(error))
        }
        Ok(Ok(mut tls)) => {
            let first = tls.get_mut().0.take_first_record();
            slot.note_sni(peer, &first);
            Ok(tls)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(total: usize, per_source: usize) -> Limits {
        Limits {
            max_connections: total,
            max_per_source: per_source,
            ..Limits::admin()
        }
    }

    #[tokio::test]
    async fn over_the_cap_is_reset_at_once_and_counted() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = tcp.local_addr().expect("address");
        let gate = Gate::new("test", limits(10, 2));
        let mut listener = Listener::new(tcp, Arc::clone(&gate));
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await);
            }
        });
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(address).await.expect("connect"));
        }
        let mut third = TcpStream::connect(address).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte))
            .await
            .expect("closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(gate.stats.refused_source.load(Ordering::Relaxed), 1);
        assert_eq!(gate.stats.accepted.load(Ordering::Relaxed), 2);
        assert_eq!(gate.stats.open.load(Ordering::Relaxed), 2);
        let mut writer = MetricsWriter::new();
        let registry = Registry::default();
        registry.gate("a\"b", Limits::admin());
        registry.render(&mut writer);
        let out = writer.finish();
        assert!(
            out.contains(
                "poolgate_listener_refused_total{listener=\"a\\\"b\",reason=\"source\"} 0"
            ),
            "{out}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_released_slot_frees_its_place_and_eviction_cancels() {
        let gate = Gate::new(
            "dns",
            Limits {
                evict_idle_after: Some(Duration::ZERO),
                ..limits(1, 1)
            },
        );
        let peer: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let first = gate.admit(peer).expect("admitted");
        first.idle();
        let second = gate.admit(peer).expect("the idle one gives way");
        tokio::time::timeout(Duration::from_secs(1), first.evicted())
            .await
            .expect("the evicted connection is told");
        assert_eq!(gate.stats.evicted.load(Ordering::Relaxed), 1);
        drop(first);
        drop(second);
        assert_eq!(gate.stats.open.load(Ordering::Relaxed), 0);
        assert!(gate.admit(peer).is_ok());
    }

    #[tokio::test]
    async fn a_label_asked_for_again_with_other_limits_takes_them() {
        let registry = Registry::default();
        let gate = registry.gate("vip:a", limits(10, 10));
        let peer: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let held = gate.admit(peer).expect("admitted");
        let again = registry.gate("vip:a", limits(1, 1));
        assert!(Arc::ptr_eq(&gate, &again), "one gate per label");
        assert_eq!(gate.limits(), limits(1, 1));
        assert_eq!(held.limits(), limits(1, 1));
        assert_eq!(
            gate.admit(peer).err(),
            Some(Refusal::PerSource),
            "the new cap is enforced"
        );
        drop(held);
        assert!(gate.admit(peer).is_ok());
    }

    #[tokio::test]
    async fn a_request_that_began_as_the_last_one_ended_keeps_its_connection() {
        let gate = Gate::new(
            "admin",
            Limits {
                evict_idle_after: Some(Duration::ZERO),
                ..limits(1, 1)
            },
        );
        let peer: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let slot = gate.admit(peer).expect("admitted");
        let marker = slot.marker();
        let activity = Activity::default();
        // The last request ended (in flight 0), then, before it marked the
        // connection idle, the next began: counted, marked busy.
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        marker.busy();
        marker.idle_unless_in_flight(&activity.in_flight);
        assert_eq!(
            gate.admit(peer).err(),
            Some(Refusal::PerSource),
            "a connection with a request in flight is not evicted"
        );
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
        marker.idle_unless_in_flight(&activity.in_flight);
        assert!(gate.admit(peer).is_ok(), "idle once nothing is in flight");
        assert_eq!(gate.stats.evicted.load(Ordering::Relaxed), 1);
        drop(slot);
    }

    #[tokio::test]
    async fn tracked_streams_keep_the_first_record_and_note_activity() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let activity = Arc::new(Activity::default());
        let mut tracked = Tracked::new(server, Arc::clone(&activity), true);
        let hello = sni::tests::client_hello(Some(b"10.0.0.1"));
        client.write_all(&hello).await.expect("write");
        client.write_all(b"after").await.expect("write");
        let mut buffer = vec![0u8; hello.len() + 5];
        tracked.read_exact(&mut buffer).await.expect("read");
        assert_eq!(tracked.take_first_record(), hello);
        assert!(sni::classify(&hello).is_illegal());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_keeps_sending_is_never_idle() {
        // An SSE stream: a few bytes every 15 s, no request in flight.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let activity = Arc::new(Activity::default());
        let mut tracked = Tracked::new(server, Arc::clone(&activity), false);
        let sender = tokio::spawn(async move {
            for _ in 0..8 {
                tracked.write_all(b": keep-alive\n\n").await.expect("write");
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        });
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        });
        let idle = tokio::time::timeout(
            Duration::from_secs(110),
            activity.idle_for(Duration::from_secs(60)),
        )
        .await;
        assert!(idle.is_err(), "cut while sending");
        sender.await.expect("sender");
        tokio::time::timeout(
            Duration::from_secs(61),
            activity.idle_for(Duration::from_secs(60)),
        )
        .await
        .expect("idle once it stops sending");
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_silence_and_no_request_in_flight() {
        let activity = Activity::default();
        activity.touch();
        activity.in_flight.store(1, Ordering::Relaxed);
        let idle = tokio::time::timeout(
            Duration::from_secs(5),
            activity.idle_for(Duration::from_secs(1)),
        )
        .await;
        assert!(idle.is_err(), "a request in flight is not idle");
        activity.in_flight.store(0, Ordering::Relaxed);
        tokio::time::timeout(
            Duration::from_secs(2),
            activity.idle_for(Duration::from_secs(1)),
        )
        .await
        .expect("idle once nothing is in flight");
    }
}
