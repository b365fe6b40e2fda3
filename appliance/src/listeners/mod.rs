//! The DNS, SIP and admin listeners, kept in line with the config while it
//! changes (`[listen]`): one supervisor follows the `PoolView` watch channel
//! and the control task's admin move (`ControlHandle::admin_move`), and
//! applies the pure diff of `plan` (which endpoints to open, which to
//! close).
//!
//! Invariants:
//! * A listener whose address did not change is never touched: its socket
//!   and its open connections carry on through any number of changes.
//! * New listeners are bound before old ones are closed, so a moved service
//!   answers on its new address as soon as the change is acknowledged. A
//!   new address that collides with one being closed (the same port, say
//!   from a wildcard to one address) is tried again right after the close.
//! * A closed DNS or SIP listener's connections end with it; a closed admin
//!   listener lets its requests in flight finish.
//! * While a move of the admin listener awaits confirmation, both addresses
//!   are served with the same router and TLS; the old one closes once the
//!   move is confirmed, the new one if it is reverted.
//! * After start, a listener that cannot be bound is logged and recorded in
//!   the event log once (kind `dns` for DNS, `system` otherwise) and tried
//!   again every second, never a crash; at start, a failed bind is an
//!   error (`poolgate run` exits and says which address).
//!
//! Once a view's listeners are open (or reported failing), its generation
//! is announced (`Serving::applied`), so a config change is acknowledged
//! only when its listeners answer.
//!
//! Each request served on an admin listener carries `web::ListenedOn`, the
//! address the listener was opened for, so a confirmation can tell which
//! listener it reached.

pub(crate) mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::AdminMove;
use crate::events::{EventKind, EventLog, NewEvent};
use crate::state::{PoolView, PublisherHandle};
use crate::{certs, dns, net, sip, web};
pub(crate) use plan::{Endpoint, Kind};

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Bind(#[from] net::BindError),
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error("cannot listen for sip-tls on {address}: {source}")]
    Tls {
        address: SocketAddr,
        #[source]
        source: certs::TlsError,
    },
}

/// The admin listeners' router and TLS settings.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub router: axum::Router,
    pub tls: Arc<rustls::ServerConfig>,
}

/// What the listeners serve with.
#[derive(Debug)]
pub(crate) struct Serving {
    pub dns: dns::Responder,
    pub publisher: PublisherHandle,
    pub sip_stats: Arc<sip::SipStats>,
    pub certificates: Arc<certs::Certificates>,
    pub admin: Admin,
    pub gates: Arc<net::Registry>,
    pub events: EventLog,
    /// The generation of the newest view the listeners are in line with:
    /// what `PUT /api/v1/config` waits for before it answers.
    pub applied: watch::Sender<u64>,
}

/// The open listeners and what they serve with.
#[derive(Debug)]
pub(crate) struct Listeners {
    serving: Serving,
    /// One stop token per open endpoint (a child of `shutdown`).
    running: BTreeMap<Endpoint, CancellationToken>,
    /// Wanted endpoints that could not be bound (each reported once).
    failing: BTreeSet<Endpoint>,
    /// Every listener task, closed ones still finishing included.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Listeners {
    /// Open every endpoint `listen` names; the first that cannot be bound
    /// is the error. They all stop on `shutdown`.
    pub(crate) async fn start(
        serving: Serving,
        listen: &crate::config::Listen,
        shutdown: CancellationToken,
    ) -> Result<Self, ListenerError> {
        let mut listeners = Self {
            serving,
            running: BTreeMap::new(),
            failing: BTreeSet::new(),
            tasks: TaskTracker::new(),
            shutdown,
        };
        for endpoint in plan::wanted(listen, None) {
            let stop = listeners.open(endpoint).await?;
            listeners.running.insert(endpoint, stop);
        }
        Ok(listeners)
    }

    /// Follow the config in `views` and the admin move in `admin_move`
    /// until shutdown; then give the admin listeners `grace` to finish
    /// their requests.
    pub(crate) async fn follow(
        mut self,
        mut views: watch::Receiver<Arc<PoolView>>,
        mut admin_move: watch::Receiver<Option<AdminMove>>,
        grace: Duration,
    ) {
        let shutdown = self.shutdown.clone();
        // Closed once the control task stops: the admin move then stays as
        // it is, and only the config is followed.
        let mut moves_open = true;
        loop {
            let keep = admin_move
                .borrow_and_update()
                .map(|admin_move| admin_move.from);
            let (wanted, generation) = {
                let view = views.borrow_and_update();
                (plan::wanted(&view.config.listen, keep), view.generation)
            };
            self.reconcile(&wanted).await;
            self.serving.applied.send_if_modified(|applied| {
                let newer = *applied < generation;
                *applied = (*applied).max(generation);
                newer
            });
            // Endpoints that failed are opened again by the next pass.
            let retry = net::bind_retry_due(!self.failing.is_empty());
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = retry => {}
                changed = views.changed() => if changed.is_err() {
                    // The publisher stopped: it only does so on shutdown.
                    shutdown.cancelled().await;
                    break;
                },
                changed = admin_move.changed(), if moves_open => moves_open = changed.is_ok(),
            }
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "Grace period over; closing admin connections still open"
            );
        }
    }

    /// Bring the open listeners in line with `wanted`: open, then close,
    /// then try once more what collided with a closed one. With `retry`,
    /// the failing ones are tried again too.
    async fn reconcile(&mut self, wanted: &BTreeSet<Endpoint>) {
        let running: BTreeSet<Endpoint> = self.running.keys().copied().collect();
        let step = plan::plan(&running, wanted);
        self.failing.retain(|endpoint| wanted.contains(endpoint));
        // Failing endpoints are not running, so they are in `step.open`.
        if step.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for endpoint in step.open {
            match self.open(endpoint).await {
                Ok(stop) => {
                    self.running.insert(endpoint, stop);
                }
                Err(error) => failed.push((endpoint, error)),
            }
        }
        let closed = !step.close.is_empty();
        for endpoint in step.close {
            if let Some(stop) = self.running.remove(&endpoint) {
                tracing::info!(service = endpoint.kind.label(), address = %endpoint.address, "Listener closed; the config no longer names it");
                stop.cancel();
            }
        }
        if closed {
            let collided = std::mem::take(&mut failed);
            for (endpoint, _) in collided {
                match self.open(endpoint).await {
                    Ok(stop) => {
                        self.running.insert(endpoint, stop);
                    }
                    Err(error) => failed.push((endpoint, error)),
                }
            }
        }
        for endpoint in self.running.keys() {
            self.failing.remove(endpoint);
        }
        for (endpoint, error) in failed {
            if self.failing.insert(endpoint) {
                self.report(endpoint, &error);
            }
        }
    }

    /// Bind one endpoint and start serving it.
    async fn open(&self, endpoint: Endpoint) -> Result<CancellationToken, ListenerError> {
        let Endpoint { kind, address } = endpoint;
        let stop = self.shutdown.child_token();
        let serving = &self.serving;
        match kind {
            Kind::Admin => {
                let listener = net::bind_tcp("admin", address).await?;
                let listener =
                    net::Listener::new(listener, serving.gates.gate("admin", net::Limits::admin()));
                let router = serving
                    .admin
                    .router
                    .clone()
                    .layer(axum::Extension(web::ListenedOn(address)));
                self.tasks.spawn(web::tls::serve(
                    listener,
                    router,
                    Arc::clone(&serving.admin.tls),
                    stop.clone(),
                ));
            }
            Kind::Dns => {
                let (udp, tcp) = dns::bind_address(address).await?;
                self.tasks.spawn(serving.dns.serve_udp(udp, stop.clone()));
                self.tasks.spawn(serving.dns.serve_tcp(tcp, stop.clone()));
            }
            Kind::SipUdp => {
                let socket = net::bind_udp("sip-udp", address).await?;
                let task = sip::serve_udp(
                    socket,
                    serving.publisher.clone(),
                    Arc::clone(&serving.sip_stats),
                    stop.clone(),
                );
                self.tasks.spawn(reported(kind, address, task));
            }
            Kind::SipTcp | Kind::SipTls => {
                let tls = match kind {
                    // The appliance certificate (the admin listener's,
                    // replaced with it), without HTTP's protocol negotiation.
                    Kind::SipTls => Some(tokio_rustls::TlsAcceptor::from(
                        serving
                            .certificates
                            .server_config(&[])
                            .map_err(|source| ListenerError::Tls { address, source })?,
                    )),
                    _ => None,
                };
                let listener = net::bind_tcp(kind.label(), address).await?;
                let task = sip::serve_tcp(
                    listener,
                    tls,
                    serving.publisher.clone(),
                    Arc::clone(&serving.sip_stats),
                    stop.clone(),
                );
                self.tasks.spawn(reported(kind, address, task));
            }
        }
        Ok(stop)
    }

    /// Log and record a listener that cannot be bound (once per episode).
    fn report(&self, endpoint: Endpoint, error: &ListenerError) {
        let service = endpoint.kind.label();
        tracing::error!(service, address = %endpoint.address, %error, "Listener cannot be opened; trying again every second, the others still run");
        let kind = match endpoint.kind {
            Kind::Dns => EventKind::Dns,
            Kind::Admin | Kind::SipUdp | Kind::SipTcp | Kind::SipTls => EventKind::System,
        };
        self.serving
            .events
            .record(
                NewEvent::new(kind, error.to_string()).detail(serde_json::json!({
                    "service": service,
                    "address": endpoint.address.to_string(),
                })),
            );
    }
}

/// A SIP listener's task: a failure is logged; the rest keep going.
async fn reported(
    kind: Kind,
    address: SocketAddr,
    task: impl Future<Output = Result<(), sip::SipError>>,
) {
    if let Err(error) = task.await {
        tracing::error!(service = kind.label(), %address, %error, "SIP listener stopped");
    }
}
