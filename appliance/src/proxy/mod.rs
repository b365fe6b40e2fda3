//! The L4 VIP proxy: TCP pass-through virtual services in front of a pool.
//!
//! One supervisor task follows the `PoolView` watch channel. Whenever the
//! config version changes it reconciles the listeners: one per
//! `address:port` of every virtual service (`port` and each extra port), so
//! a service added by a reload starts listening and a removed one stops
//! accepting while its connections finish; an address that cannot be bound
//! (another process holds the port) is logged once and tried again every
//! second until it can. A connection accepted on port P goes to the chosen
//! member's address on P's member port (P itself unless the service maps
//! it); a changed member port or `send_proxy` retargets the listener
//! without rebinding it. With `send_proxy = "v2"` the member connection
//! starts with a PROXY protocol v2 header (`proxy_v2`), sent with the
//! client bytes that have already arrived in one write, before any other
//! client byte.
//!
//! Invariants:
//! * Members are chosen from the latest view's `ServiceState::candidates`
//!   only (enabled and up for the service's monitor); a draining or down
//!   member gets no new connection but keeps the ones it has (unless the
//!   service sets `drop_on_down` and the member is down).
//! * Connections never depend on the listener or the generation they started
//!   in: reloads that add or remove members, change weights or the scheduler
//!   leave every open connection alone.
//! * Every relayed connection holds an `ActiveGuard`, so the member's
//!   `active_connections` (least-connections, drain completion) is exact.
//! * A failure on one connection is logged and counted, never propagated.
//! * A connection's service (settings and scheduler state) is the one its
//!   listener was last given by `reconcile`, resolved once per config
//!   version: accepting searches, copies and locks nothing per connection.
//! * Every accepted connection passed its service's gate (`net`): at most
//!   `Limits::proxy` connections per service and per source; over a cap a
//!   connection is reset at accept, before a member is chosen.

mod on_wake;
mod proxy_v2;
mod relay;
pub(crate) mod schedule;
mod workers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use on_wake::{OwnWaker, on_wake};
pub(crate) use relay::{Outcome, RelayMode};
use schedule::{Balancer, Candidate, PersistTable};
pub(crate) use workers::Workers;

use crate::config::VirtualService;
use crate::config::{Persistence, SendProxy};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::net;
use crate::state::{Health, MemberCounters, PoolView, PublisherHandle, ServiceCounters};

/// Most client addresses one service remembers for source-IP persistence.
const PERSIST_CAPACITY: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("cannot listen for virtual service {service} on {address}: {source}")]
    Bind {
        service: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Run the proxy until `shutdown` is cancelled, then stop accepting and give
/// open connections `grace` to finish before cutting them. What the operator
/// must hear about (a service that cannot listen) goes to `events`. Each
/// virtual service's connections are admitted by the gate `vip:<service>` of
/// `gates` (shared by the service's ports): capped in total and per source,
/// over a cap closed at once. Listeners and connections run on `workers`.
pub(crate) async fn serve(
    workers: Workers,
    publisher: PublisherHandle,
    events: EventLog,
    mode: RelayMode,
    shutdown: CancellationToken,
    grace: Duration,
    gates: Arc<net::Registry>,
) {
    let shared = Arc::new(Shared {
        gates,
        views: publisher.subscribe(),
        mode,
        services: Mutex::new(HashMap::new()),
        live: Live::default(),
        force: CancellationToken::new(),
    });
    let mut views = publisher.subscribe();
    let mut listeners: BTreeMap<SocketAddr, Listening> = BTreeMap::new();
    let mut failing = BTreeSet::new();
    let mut version = None;
    let mut retry_due = false;
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        if version != Some(view.config_version) || retry_due {
            version = Some(view.config_version);
            reconcile(
                &view,
                &workers,
                &mut listeners,
                &mut failing,
                &shared,
                &events,
            );
        }
        drop(view);
        // A port another process holds now may be free later: try the
        // listeners that failed again, without waiting for a config change.
        let retry = net::bind_retry_due(!failing.is_empty());
        retry_due = false;
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = retry => retry_due = true,
            changed = views.changed() => if changed.is_err() {
                // The publisher stopped: it only does so on shutdown.
                shutdown.cancelled().await;
                break;
            },
        }
    }
    for listening in listeners.values() {
        listening.stop.cancel();
    }
    let open = shared.live.count();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_s = grace.as_secs(),
            "Waiting for proxied connections to finish"
        );
        if tokio::time::timeout(grace, shared.live.idle())
            .await
            .is_err()
        {
            let cut = shared.live.count();
            tracing::warn!(
                connections = cut,
                "Grace period over; closing proxied connections still open"
            );
            shared.force.cancel();
            shared.live.idle().await;
        }
    }
}

/// What every listener and connection of this proxy shares.
#[derive(Debug)]
struct Shared {
    /// The accept layer's gates, one per service.
    gates: Arc<net::Registry>,
    views: watch::Receiver<Arc<PoolView>>,
    mode: RelayMode,
    /// Scheduler and persistence state per service name, kept across reloads.
    services: Mutex<HashMap<String, Arc<ServiceRuntime>>>,
    live: Live,
    /// Cancelled when the shutdown grace period is over.
    force: CancellationToken,
}

impl Shared {
    /// The runtime of service `name`, made on first use. Called once per
    /// service and config version (`reconcile`), never per connection.
    fn service(&self, name: &str) -> Arc<ServiceRuntime> {
        let mut services = self
            .services
            .lock()
            .expect("service table lock is never poisoned");
        if let Some(runtime) = services.get(name) {
            return Arc::clone(runtime);
        }
        Arc::clone(
            services
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(ServiceRuntime::new())),
        )
    }
}

/// What a listener's connections need of their service: its settings, its
/// runtime and the member port of this listener's port, resolved by
/// `reconcile` once per config version, so a connection clones one `Arc`
/// instead of searching and copying the service.
#[derive(Debug)]
struct Target {
    service: Arc<VirtualService>,
    runtime: Arc<ServiceRuntime>,
    counters: Arc<ServiceCounters>,
    /// Where on the member this listener's connections go.
    member_port: u16,
    /// The config version it was resolved from.
    version: i64,
}

impl Target {
    fn of(
        view: &PoolView,
        service: Arc<VirtualService>,
        runtime: Arc<ServiceRuntime>,
        port: u16,
    ) -> Self {
        let counters = view
            .services
            .iter()
            .find(|s| s.name == service.name)
            .map(|s| Arc::clone(&s.counters))
            .unwrap_or_default();
        Self {
            member_port: service.member_port(port).unwrap_or(port),
            service,
            runtime,
            counters,
            version: view.config_version,
        }
    }

    /// The target of `local` in `view`, looked up: for a connection
    /// accepted after a new config was published but before `reconcile`
    /// handed its listener the new target.
    fn resolve(view: &PoolView, local: SocketAddr, shared: &Shared) -> Option<Self> {
        view.config
            .virtual_services
            .iter()
            .find(|s| s.address == local.ip() && s.ports.contains(&local.port()))
            .map(|service| {
                let runtime = shared.service(&service.name);
                Self::of(view, Arc::new(service.clone()), runtime, local.port())
            })
    }
}

/// One running listener: how to stop it, and the service its connections
/// go to now (a reload may change the service's settings, or give the
/// address to another service, while the listener stays).
#[derive(Debug)]
struct Listening {
    stop: CancellationToken,
    target: watch::Sender<Arc<Target>>,
}

#[derive(Debug)]
struct ServiceRuntime {
    epoch: Instant,
    select: Mutex<Selection>,
}

#[derive(Debug)]
struct Selection {
    balancer: Balancer,
    persist: PersistTable,
}

impl ServiceRuntime {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            select: Mutex::new(Selection {
                balancer: Balancer::default(),
                persist: PersistTable::new(PERSIST_CAPACITY),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Open connection tasks, so shutdown can wait for them.
#[derive(Debug, Default)]
struct Live {
    count: AtomicUsize,
    none_left: Notify,
}

impl Live {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn idle(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live.count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(shared))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.live.none_left.notify_waiters();
        }
    }
}

/// Counts one connection as active on its member and its service for as
/// long as it lives.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    member: Arc<MemberCounters>,
    service: Arc<ServiceCounters>,
}

impl ActiveGuard {
    pub(crate) fn new(member: Arc<MemberCounters>, service: Arc<ServiceCounters>) -> Self {
        for (active, total) in [
            (&member.active_connections, &member.total_connections),
            (&service.active_connections, &service.total_connections),
        ] {
            active.fetch_add(1, Ordering::Relaxed);
            total.fetch_add(1, Ordering::Relaxed);
        }
        Self { member, service }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.member
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.service
            .active_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bring the listeners in line with `view`'s virtual services. `failing`
/// holds the addresses that could not be bound: each failure is logged and
/// recorded once, not at every retry.
fn reconcile(
    view: &PoolView,
    workers: &Workers,
    listeners: &mut BTreeMap<SocketAddr, Listening>,
    failing: &mut BTreeSet<SocketAddr>,
    shared: &Arc<Shared>,
    events: &EventLog,
) {
    let mut wanted: BTreeMap<SocketAddr, (&VirtualService, Arc<Target>)> = BTreeMap::new();
    for service in &view.config.virtual_services {
        let settings = Arc::new(service.clone());
        let runtime = shared.service(&service.name);
        for &port in &service.ports {
            let target = Target::of(view, Arc::clone(&settings), Arc::clone(&runtime), port);
            wanted.insert(
                SocketAddr::new(service.address, port),
                (service, Arc::new(target)),
            );
        }
    }
    listeners.retain(|address, listening| {
        let keep = wanted.contains_key(address);
        if !keep {
            tracing::info!(%address, "Virtual service listener removed; open connections continue");
            listening.stop.cancel();
        }
        keep
    });
    failing.retain(|address| wanted.contains_key(address));
    for (address, (service, target)) in wanted {
        if let Some(listening) = listeners.get(&address) {
            listening.target.send_replace(target);
            continue;
        }
        // One listener per worker; accepted connections inherit
        // `TCP_NODELAY` from it.
        match net::tcp_listeners(address, workers.count()).and_then(|listeners| {
            for listener in &listeners {
                socket2::SockRef::from(listener).set_tcp_nodelay(true)?;
            }
            Ok(listeners)
        }) {
            Ok(bound) => {
                failing.remove(&address);
                let at = bound[0].local_addr().unwrap_or(address);
                let label = format!("vip:{}", service.name);
                tracing::info!(service = %label, address = %at, "listening");
                let stop = CancellationToken::new();
                let gate = shared
                    .gates
                    .gate(&label, net::Limits::proxy(service.idle_timeout));
                let (target, targets) = watch::channel(target);
                workers.spawn_each(bound, |listener| {
                    accept_loop(
                        listener,
                        Arc::clone(&gate),
                        address,
                        targets.clone(),
                        Arc::clone(shared),
                        stop.clone(),
                    )
                });
                listeners.insert(address, Listening { stop, target });
            }
            Err(_) if failing.contains(&address) => {}
            Err(source) => {
                failing.insert(address);
                let error = ProxyError::Bind {
                    service: service.name.clone(),
                    address,
                    source,
                };
                tracing::error!(service = %service.name, %address, %error, "Virtual service cannot listen; the other services still run");
                events.record(
                    NewEvent::new(EventKind::Proxy, error.to_string())
                        .pool(&service.pool)
                        .detail(serde_json::json!({
                            "service": service.name,
                            "address": address.to_string(),
                        })),
                );
            }
        }
    }
    let names: Vec<&str> = view
        .config
        .virtual_services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    shared
        .services
        .lock()
        .expect("service table lock is never poisoned")
        .retain(|name, _| names.contains(&name.as_str()));
}

/// Accept on one worker's listener until `stop`; each connection is a task
/// on this worker.
async fn accept_loop(
    listener: std::net::TcpListener,
    gate: Arc<net::Gate>,
    address: SocketAddr,
    targets: watch::Receiver<Arc<Target>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => net::Listener::new(listener, gate),
        Err(error) => {
            tracing::error!(%address, %error, "Virtual service listener cannot be registered with its worker");
            return;
        }
    };
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            conn = listener.accept() => conn,
        };
        let guard = LiveGuard::new(&shared);
        let shared = Arc::clone(&shared);
        let target = Arc::clone(&targets.borrow());
        tokio::spawn(async move {
            let _guard = guard;
            let net::Conn { stream, peer, slot } = conn;
            connection(stream, peer, address, &target, &slot, &shared).await;
        });
    }
}

/// The member a connection goes to.
struct Chosen {
    pool: String,
    member: String,
    address: IpAddr,
    counters: Arc<MemberCounters>,
}

/// Serve one accepted connection: choose, connect (with retries), relay.
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    target: &Target,
    slot: &net::Slot,
    shared: &Arc<Shared>,
) {
    let view = Arc::clone(&shared.views.borrow());
    // A config newer than the listener's target is followed at once.
    let fresh;
    let target = if target.version == view.config_version {
        target
    } else {
        let Some(resolved) = Target::resolve(&view, local, shared) else {
            return;
        };
        fresh = resolved;
        &fresh
    };
    let Target {
        service,
        runtime,
        counters: service_counters,
        member_port,
        ..
    } = target;
    // A client that has already sent its first bytes (a ClientHello, a
    // request) has them reach the member in the handshake's last segment:
    // the member socket delays that ACK for the relay's first write. One
    // that has not spoken yet may wait for the member to speak first, so
    // its member is acknowledged at once. A PROXY header always follows.
    let delay_ack = service.send_proxy == SendProxy::V2 || has_bytes_waiting(&client);
    let mut excluded: Vec<usize> = Vec::new();
    let mut connected = None;
    // With PROXY v2: client bytes read ahead to go with the header.
    let mut early = Vec::new();
    while let Some((index, chosen)) = choose(&view, service, runtime, peer.ip(), &excluded) {
        let target = SocketAddr::new(chosen.address, *member_port);
        let attempt =
            tokio::time::timeout(service.connect_timeout, connect(target, delay_ack)).await;
        let attempt = match (attempt, service.send_proxy) {
            (Ok(Ok(stream)), SendProxy::V2) => {
                let header = proxy_v2::Header::new(peer, local);
                match send_first(
                    &client,
                    &stream,
                    &header,
                    &mut early,
                    service.connect_timeout,
                )
                .await
                {
                    Ok(()) => Ok(Ok(stream)),
                    Err(error) => Ok(Err(error)),
                }
            }
            (attempt, _) => attempt,
        };
        match attempt {
            Ok(Ok(stream)) => {
                connected = Some((chosen, stream));
                break;
            }
            Ok(Err(error)) => {
                chosen
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %service.name, member = %chosen.member, %target, %error, "Connect to member failed; trying another");
            }
            Err(_) => {
                chosen
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %service.name, member = %chosen.member, %target, timeout_ms = service.connect_timeout.as_millis() as u64, "Connect to member timed out; trying another");
            }
        }
        excluded.push(index);
    }
    drop(view);
    let Some((chosen, member)) = connected else {
        tracing::warn!(service = %service.name, client = %peer, "No member available; closing the client connection");
        return;
    };
    let _active = ActiveGuard::new(Arc::clone(&chosen.counters), Arc::clone(service_counters));
    for bytes in [&chosen.counters.bytes_in, &service_counters.bytes_in] {
        bytes.fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    // The relay is made inside `select!` (a future bound to a local and
    // then moved keeps its room twice in this one's state, which every idle
    // connection holds). Its branches are made before any is polled, so the
    // reset is registered before relaying: one asked for at any point of the
    // connection's life (disable grace, drain deadline) reaches it. The
    // signals and the relay's idle timer share one waker and are polled
    // only once it fired (`on_wake`), not at every byte.
    let seldom = OwnWaker::new();
    let outcome = tokio::select! {
        biased;
        outcome = relay::relay(
            shared.mode,
            &client,
            &member,
            service.idle_timeout,
            relay::Meters {
                member: &chosen.counters,
                service: service_counters,
            },
            &seldom,
        ) => outcome,
        () = on_wake(&seldom, shared.force.cancelled()) => return,
        () = on_wake(&seldom, chosen.counters.reset.notified()) => {
            let _ = client.set_zero_linger();
            let _ = member.set_zero_linger();
            tracing::info!(service = %service.name, member = %chosen.member, client = %peer, "Connection reset by drain or disable");
            return;
        }
        // Only a `drop_on_down` service polls (and boxes) its health watch;
        // the others keep no room for it in their state.
        () = on_wake(&seldom, async { Box::pin(went_down(shared.views.clone(), &chosen, service)).await }), if service.drop_on_down => {
            let _ = client.set_zero_linger();
            let _ = member.set_zero_linger();
            tracing::info!(service = %service.name, member = %chosen.member, client = %peer, "Member down; connection dropped");
            return;
        }
    };
    if outcome == Outcome::IdleTimeout {
        slot.timed_out(net::Timeout::Idle);
    }
    tracing::debug!(service = %service.name, member = %chosen.member, client = %peer, ?outcome, "Connection ended");
}

/// Whether `client` has bytes queued (peeked, without waiting or taking
/// them).
fn has_bytes_waiting(client: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        recv(
            client.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(1)
    )
}

/// A connection to a member: `TCP_NODELAY` (the relay writes what it read
/// at once; the listener gives client connections the same), and with
/// `delay_ack` `TCP_QUICKACK` off, so the handshake's last ACK waits for
/// the first bytes sent and goes with them.
async fn connect(target: SocketAddr, delay_ack: bool) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    if delay_ack {
        socket2::SockRef::from(&socket).set_tcp_quickack(false)?;
    }
    socket.connect(target).await
}

/// Most client bytes read ahead to go in one write with the PROXY header:
/// a TLS ClientHello or an HTTP request head fits.
const EARLY_MAX: usize = 16 * 1024;

/// Start `member` with `header` and, in the same write, what `client` has
/// already sent (read into `early`, kept for another member if this one
/// fails). Never waits for the client: a protocol where the server speaks
/// first gets the header alone. A client that closed before sending
/// anything still gets its EOF relayed, after the header. Bounded by
/// `timeout` (a fresh connection's send buffer takes a header at once).
async fn send_first(
    client: &TcpStream,
    member: &TcpStream,
    header: &proxy_v2::Header,
    early: &mut Vec<u8>,
    timeout: Duration,
) -> std::io::Result<()> {
    while early.len() < EARLY_MAX {
        early.reserve(EARLY_MAX - early.len());
        match client.try_read_buf(early) {
            Ok(0) => break,
            Ok(_) => {}
            // Nothing more yet (WouldBlock), or a client error that the
            // relay meets again on its first read and answers as it does
            // any client reset.
            Err(_) => break,
        }
    }
    let mut first = Vec::with_capacity(proxy_v2::MAX_LEN + early.len());
    first.extend_from_slice(header.as_bytes());
    first.extend_from_slice(early);
    let write = async {
        let mut sent = 0;
        while sent < first.len() {
            member.writable().await?;
            match member.try_write(&first[sent..]) {
                Ok(n) => sent += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "PROXY header not accepted by the member in time",
            ))
        })
}

/// Pick a member for `client`, honouring source-IP persistence while the
/// remembered member stays eligible.
fn choose(
    view: &PoolView,
    service: &VirtualService,
    runtime: &ServiceRuntime,
    client: IpAddr,
    excluded: &[usize],
) -> Option<(usize, Chosen)> {
    let state = view.services.iter().find(|s| s.name == service.name)?;
    let pool = view.pools.get(state.pool)?;
    let members: Vec<Candidate<'_>> = pool
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| Candidate {
            name: &m.name,
            weight: m.weight,
            active: m.counters.active(),
            eligible: state.candidates.contains(&i) && !excluded.contains(&i),
        })
        .collect();
    let now = runtime.now_ms();
    let mut selection = runtime
        .select
        .lock()
        .expect("selection lock is never poisoned");
    let sticky = service.persistence == Persistence::SourceIp;
    let remembered = if sticky {
        selection
            .persist
            .lookup(client, now)
            .and_then(|name| members.iter().position(|m| m.name == name && m.eligible))
    } else {
        None
    };
    let index = match remembered {
        Some(index) => Some(index),
        None => selection.balancer.pick(service.scheduler, &members, client),
    };
    let Some(index) = index else {
        if sticky {
            selection.persist.forget(client);
        }
        return None;
    };
    if sticky {
        let timeout = u64::try_from(service.persistence_timeout.as_millis()).unwrap_or(u64::MAX);
        selection
            .persist
            .record(client, members[index].name, now, timeout);
    }
    drop(selection);
    let member = &pool.members[index];
    Some((
        index,
        Chosen {
            pool: pool.name.clone(),
            member: member.name.clone(),
            address: state.connect_to.get(index).copied()?,
            counters: Arc::clone(&member.counters),
        },
    ))
}

/// Resolves when the service's monitor marks `chosen`'s address down. A member removed
/// from the config keeps its connections (reloads never cut traffic).
async fn went_down(
    mut views: watch::Receiver<Arc<PoolView>>,
    chosen: &Chosen,
    service: &VirtualService,
) {
    loop {
        let down = {
            let view = views.borrow_and_update();
            match view
                .pool(&chosen.pool)
                .and_then(|p| p.members.iter().find(|m| m.name == chosen.member))
            {
                None => false,
                Some(member) => member
                    .health_of(&service.monitor, chosen.address)
                    .is_some_and(|h| h.state == Health::Down),
            }
        };
        if down {
            return;
        }
        if views.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests;
