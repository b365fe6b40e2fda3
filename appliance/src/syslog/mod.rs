//! Remote syslog: every event of the event log (health changes, admin
//! actions, drain milestones, config commits, system, licence, upgrade
//! and HA events) sent as an RFC 5424 message to the collectors the admin
//! names, over TLS (RFC 5425), plain TCP (RFC 6587 octet counting) or UDP
//! (RFC 5426). poolgate sends itself; design note:
//! `docs/decisions/1103-remote-syslog.md`.
//!
//! * [`settings`]: the collectors (kept in the settings store under
//!   [`SETTINGS_KEY`], never synced to an HA peer), validated by field;
//! * [`format`]: an event as an RFC 5424 line and its framing.
//!
//! The source is the event table itself, read after the last id sent
//! ([`POLL`] apart), so events committed with their change (admin states,
//! config versions) and those of the event log's writer go out alike, in
//! commit order, and nothing that records an event waits for a collector.
//! Each collector has its own bounded queue ([`QUEUE`]) and task: a slow or
//! unreachable collector drops (and counts) its own messages only, and is
//! reconnected with a backoff from 1 s doubling to [`MAX_BACKOFF`]. A
//! message is sent at most once; one written into a connection the
//! collector has just closed is lost with it, as with any syslog sender.

pub(crate) mod format;
pub(crate) mod settings;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::{Kind, MetricsWriter, Render};
use crate::state::PublisherHandle;
use crate::store::{Store, StoreError};
use crate::web::FieldProblem;

pub use settings::{Severity, SyslogServer, SyslogSettings, Transport};

pub(crate) const SETTINGS_KEY: &str = "syslog.settings";
/// How often the event table is read for new events.
const POLL: Duration = Duration::from_millis(200);
/// Events read from the table per query.
const BATCH: usize = 256;
/// Messages waiting per collector before new ones are dropped.
pub(crate) const QUEUE: usize = 2048;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connect (with its TLS handshake) or a write that takes longer gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("invalid syslog settings")]
    Invalid(Vec<FieldProblem>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored syslog settings cannot be read: {0}")]
    Stored(String),
}

/// One collector's counters and connection state.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    sent: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl ServerStats {
    fn failed(&self, error: String) {
        self.failures.fetch_add(1, Relaxed);
        self.connected.store(false, Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(error);
    }
}

/// What `GET /api/v1/system/syslog` shows of one collector.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServerStatus {
    /// `host:port/transport`.
    pub server: String,
    pub connected: bool,
    pub sent: u64,
    /// Dropped because its queue was full (the collector slow or away).
    pub dropped: u64,
    /// Failed connects and writes.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What `GET /api/v1/system/syslog` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyslogView {
    /// `None`: remote syslog is off.
    pub settings: Option<SyslogSettings>,
    pub servers: Vec<ServerStatus>,
}

/// This appliance's remote syslog: settings, and the collectors' counters.
#[derive(Debug)]
pub struct Syslog {
    store: Store,
    events: EventLog,
    settings: watch::Sender<Option<SyslogSettings>>,
    /// Per collector label, of the settings in force.
    stats: Mutex<BTreeMap<String, Arc<ServerStats>>>,
}

impl Syslog {
    pub(crate) fn load(store: Store, events: EventLog) -> Result<Arc<Self>, SyslogError> {
        let settings = match store.setting(SETTINGS_KEY)? {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<SyslogSettings>(&text)
                    .map_err(|e| SyslogError::Stored(e.to_string()))?,
            ),
        };
        Ok(Arc::new(Self {
            store,
            events,
            settings: watch::Sender::new(settings),
            stats: Mutex::default(),
        }))
    }

    pub(crate) fn settings(&self) -> Option<SyslogSettings> {
        self.settings.borrow().clone()
    }

    /// Validate and store `settings` (`None` turns remote syslog off);
    /// 422 naming the field, nothing stored, when they are invalid.
    /// Blocking (the store).
    pub(crate) fn set(
        &self,
        settings: Option<SyslogSettings>,
        bundles: &crate::health::ca::CaBundles,
        actor: &str,
    ) -> Result<(), SyslogError> {
        let message = match &settings {
            Some(new) => {
                let problems = settings::validate(new, bundles);
                if !problems.is_empty() {
                    return Err(SyslogError::Invalid(problems));
                }
                let text = serde_json::to_string(new).expect("settings serialise");
                self.store.set_setting(SETTINGS_KEY, &text)?;
                let names: Vec<String> = new.servers.iter().map(SyslogServer::label).collect();
                format!(
                    "Remote syslog settings changed by {actor}: {}",
                    names.join(", ")
                )
            }
            None => {
                self.store.remove_setting(SETTINGS_KEY)?;
                format!("Remote syslog turned off by {actor}")
            }
        };
        tracing::info!(%actor, "{message}");
        self.settings.send_replace(settings);
        self.events
            .record(NewEvent::new(EventKind::System, message));
        Ok(())
    }

    pub(crate) fn view(&self) -> SyslogView {
        let settings = self.settings();
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let servers = settings
            .iter()
            .flat_map(|s| &s.servers)
            .map(|server| {
                let label = server.label();
                let stat = stats.get(&label).cloned().unwrap_or_default();
                let last_error = stat
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                ServerStatus {
                    server: label,
                    connected: stat.connected.load(Relaxed),
                    sent: stat.sent.load(Relaxed),
                    dropped: stat.dropped.load(Relaxed),
                    failures: stat.failures.load(Relaxed),
                    last_error,
                }
            })
            .collect();
        SyslogView { settings, servers }
    }

    /// Follow the event table and the settings until `shutdown`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        publisher: PublisherHandle,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(Arc::clone(self).run(publisher, shutdown))
    }

    async fn run(self: Arc<Self>, publisher: PublisherHandle, shutdown: CancellationToken) {
        let hostname = hostname();
        let pid = std::process::id();
        let mut settings = self.settings.subscribe();
        let mut senders: Vec<Sender> = Vec::new();
        let mut cursor = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        settings.mark_changed();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = settings.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let wanted = settings.borrow_and_update().clone();
                    senders.drain(..).for_each(Sender::stop);
                    senders = self.start(wanted, &publisher, &shutdown);
                }
                _ = tick.tick() => {}
            }
            // With no collector nothing is read; the first settings start
            // from the events recorded from then on.
            if senders.is_empty() {
                cursor = None;
                continue;
            }
            let after = match cursor {
                Some(after) => after,
                None => match self.newest_id().await {
                    Some(id) => id,
                    None => continue,
                },
            };
            cursor = Some(after);
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || store.events_after(after, BATCH)).await;
            let events = match read {
                Ok(Ok(events)) => events,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "Cannot read events for remote syslog");
                    continue;
                }
                Err(_) => continue,
            };
            for event in events {
                cursor = Some(event.id);
                let severity = format::severity(&event);
                let line: Arc<str> = format::message(&event, &hostname, pid).into();
                for sender in senders.iter().filter(|s| severity <= s.min_severity) {
                    sender.offer(Arc::clone(&line));
                }
            }
        }
        senders.into_iter().for_each(Sender::stop);
    }

    /// The newest event id now (0 for an empty log), `None` if the store
    /// cannot say.
    async fn newest_id(&self) -> Option<i64> {
        let store = self.store.clone();
        let newest = tokio::task::spawn_blocking(move || {
            store.events(&crate::store::EventFilter {
                after: None,
                limit: 1,
                ..Default::default()
            })
        })
        .await;
        match newest {
            Ok(Ok(events)) => Some(events.first().map_or(0, |e| e.id)),
            _ => None,
        }
    }

    fn start(
        &self,
        settings: Option<SyslogSettings>,
        publisher: &PublisherHandle,
        shutdown: &CancellationToken,
    ) -> Vec<Sender> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.clear();
        let servers = settings.map(|s| s.servers).unwrap_or_default();
        servers
            .into_iter()
            .map(|server| {
                let stat = Arc::new(ServerStats::default());
                stats.insert(server.label(), Arc::clone(&stat));
                Sender::spawn(server, stat, publisher.clone(), shutdown.child_token())
            })
            .collect()
    }
}

impl Render for Syslog {
    fn render(&self, out: &mut MetricsWriter) {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        type Read = fn(&ServerStats) -> u64;
        let families: [(&str, &str, Read); 3] = [
            (
                "poolgate_syslog_sent_total",
                "Messages sent to a remote syslog collector.",
                |s| s.sent.load(Relaxed),
            ),
            (
                "poolgate_syslog_dropped_total",
                "Messages dropped because a collector's queue was full.",
                |s| s.dropped.load(Relaxed),
            ),
            (
                "poolgate_syslog_failures_total",
                "Failed connects and writes to a remote syslog collector.",
                |s| s.failures.load(Relaxed),
            ),
        ];
        for (name, help, value) in families {
            let mut family = out.family(name, Kind::Counter, help);
            for (label, stat) in stats.iter() {
                family.sample(&[("server", label)], value(stat));
            }
        }
    }
}

/// The host name collectors see (RFC 5424 HOSTNAME), `-` if unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// One collector's queue and the task that empties it.
#[derive(Debug)]
struct Sender {
    min_severity: Severity,
    queue: mpsc::Sender<Arc<str>>,
    stats: Arc<ServerStats>,
    stop: CancellationToken,
}

impl Sender {
    fn spawn(
        server: SyslogServer,
        stats: Arc<ServerStats>,
        publisher: PublisherHandle,
        stop: CancellationToken,
    ) -> Self {
        let (queue, messages) = mpsc::channel(QUEUE);
        let sender = Self {
            min_severity: server.min_severity,
            queue,
            stats: Arc::clone(&stats),
            stop: stop.clone(),
        };
        tokio::spawn(deliver(server, messages, stats, publisher, stop));
        sender
    }

    /// Queue `line`; never waits.
    fn offer(&self, line: Arc<str>) {
        if self.queue.try_send(line).is_err() {
            let dropped = self.stats.dropped.fetch_add(1, Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "Remote syslog queue full; message dropped");
            }
        }
    }

    fn stop(self) {
        self.stop.cancel();
    }
}

/// A connection to a collector.
enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection {
    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Self::Udp(socket) => socket.send(line.as_bytes()).await.map(drop),
            Self::Tcp(stream) => stream.write_all(&format::octet_counted(line)).await,
            Self::Tls(stream) => {
                stream.write_all(&format::octet_counted(line)).await?;
                stream.flush().await
            }
        }
    }
}

async fn connect(server: &SyslogServer, publisher: &PublisherHandle) -> Result<Connection, String> {
    let addresses: Vec<_> = tokio::net::lookup_host((server.host.as_str(), server.port()))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", server.host))?
        .collect();
    let mut last = format!("{} has no address", server.host);
    for address in addresses {
        if server.transport == Transport::Udp {
            let local: std::net::SocketAddr = match address {
                std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
            socket.connect(address).await.map_err(|e| e.to_string())?;
            return Ok(Connection::Udp(socket));
        }
        let stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(error) => {
                last = format!("{address}: {error}");
                continue;
            }
        };
        if server.transport == Transport::Tcp {
            return Ok(Connection::Tcp(stream));
        }
        let tls = tls_config(server, publisher)?;
        let name = rustls_pki_types::ServerName::try_from(server.host.clone())
            .map_err(|e| format!("{}: {e}", server.host))?;
        return match tokio_rustls::TlsConnector::from(tls)
            .connect(name, stream)
            .await
        {
            Ok(stream) => Ok(Connection::Tls(Box::new(stream))),
            Err(error) => Err(format!("TLS with {address}: {error}")),
        };
    }
    Err(last)
}

/// The client config verifying the collector with its CA bundle, as the
/// pool view holds it now (a replaced bundle counts from the next connect).
fn tls_config(
    server: &SyslogServer,
    publisher: &PublisherHandle,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let name = server.ca_bundle.as_deref().unwrap_or_default();
    let view = publisher.current();
    let bundle = view
        .ca_bundles
        .get(name)
        .ok_or_else(|| format!("the CA bundle {name:?} is no longer uploaded"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(bundle.roots())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn deliver(
    server: SyslogServer,
    mut messages: mpsc::Receiver<Arc<str>>,
    stats: Arc<ServerStats>,
    publisher: PublisherHandle,
    stop: CancellationToken,
) {
    let label = server.label();
    let mut backoff = Duration::from_secs(1);
    let mut pending: Option<Arc<str>> = None;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            result = tokio::time::timeout(IO_TIMEOUT, connect(&server, &publisher)) => {
                result.unwrap_or_else(|_| Err("connect timed out".into()))
            }
        };
        let mut connection = match connected {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(server = %label, %error, "Cannot reach the syslog collector");
                stats.failed(error);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        stats.connected.store(true, Relaxed);
        tracing::info!(server = %label, "Connected to the syslog collector");
        loop {
            let line = match pending.take() {
                Some(line) => line,
                None => tokio::select! {
                    () = stop.cancelled() => return,
                    line = messages.recv() => match line {
                        Some(line) => line,
                        None => return,
                    },
                },
            };
            let sent = tokio::time::timeout(IO_TIMEOUT, connection.send(&line)).await;
            match sent {
                Ok(Ok(())) => {
                    stats.sent.fetch_add(1, Relaxed);
                }
                // A datagram that could not go is not sent again.
                Ok(Err(error)) if matches!(connection, Connection::Udp(_)) => {
                    stats.dropped.fetch_add(1, Relaxed);
                    stats.failed(error.to_string());
                    stats.connected.store(true, Relaxed);
                }
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "write timed out".to_owned(),
                    };
                    tracing::warn!(server = %label, %error, "Lost the syslog collector");
                    stats.failed(error);
                    pending = Some(line);
                    break;
                }
            }
        }
    }
}
