//! Address ownership: poolgate holds the addresses its config listens on.
//! Every virtual service address and every DNS, SIP and admin listen
//! address that is not a wildcard or loopback address and that the host
//! does not already have is added to the interface whose subnet contains
//! it (or the one the virtual service names with `interface`), announced
//! with a gratuitous ARP or an unsolicited neighbour advertisement, and
//! removed again once nothing in the config uses it (and when poolgate
//! stops). Listeners and the proxy then bind as on any local address; the
//! proxy already retries until its address exists.
//!
//! This module is the one facade of address ownership, so that its owner
//! can change in one place (an HA pair hands the addresses to keepalived):
//! * [`desired`]: the pure part: which addresses, on which interface, and
//!   the steps from the host's state to that (unit-tested, no sockets);
//! * [`HostCheck`]: the check a config change passes before it is
//!   committed (`control`): an address in no interface's subnet, or an
//!   interface that does not exist, is a 422 naming the field;
//! * [`spawn`]: the task that makes the host match the committed config, at
//!   start (before anything binds), on every committed change and every
//!   [`RESYNC`] (interfaces come and go), over [`netlink`], announcing
//!   through [`announce`]. Every address added or removed is an event
//!   (`System`) and counted ([`AddressStats`]).
//!
//! * [`Holder`]: who adds and removes the wanted set. poolgate itself, or,
//!   on an appliance with VRRP settings, keepalived (`vrrp`): then the task
//!   gives up what it added and leaves the addresses alone, while the host
//!   check and the placement problems stay, and [`vrrp_wanted`] hands the
//!   same wanted set to keepalived's configuration.
//!
//! On only with `poolgate run --manage-addresses` (the systemd unit passes
//! it). Needs `CAP_NET_ADMIN` and `CAP_NET_RAW` (the unit grants them).
//! Without them, adding fails, the failure is an event and a counter, and
//! everything else keeps running. Design note:
//! `docs/decisions/0900-vip-addresses.md`.

pub(crate) mod announce;
pub(crate) mod desired;
pub(crate) mod netlink;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FieldError};
use crate::control::ControlHandle;
use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::{Kind, MetricsWriter, Render};

pub(crate) use desired::{Desired, HostAddress, HostInterface, Step};
use netlink::Netlink;

/// How often the host is compared with the config even without a change.
pub(crate) const RESYNC: Duration = Duration::from_secs(10);

/// Who holds the wanted addresses on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// This task adds and removes them over netlink.
    Poolgate,
    /// keepalived does (the appliance is one of a VRRP pair): it adds them
    /// on the master only, so this task adds nothing and removes its own.
    Keepalived,
}

/// The wanted set for keepalived's `virtual_ipaddress` blocks, against this
/// host now. As `desired`, except that an address held as a host route
/// (/32, /128) counts as a VIP whoever added it: on the master keepalived
/// holds them, unmarked, and they must stay in the set.
pub(crate) fn vrrp_wanted(config: &Config) -> Desired {
    let mut host = host_interfaces();
    for interface in &mut host {
        for address in &mut interface.addresses {
            let full = if address.ip.is_ipv4() { 32 } else { 128 };
            address.ours = address.prefix_len == full;
        }
    }
    desired::desired(config, &host)
}

/// The check a config passes against the host's interfaces before it is
/// committed or previewed.
#[derive(Clone)]
pub(crate) struct HostCheck(Arc<CheckFn>);

type CheckFn = dyn Fn(&Config) -> Vec<FieldError> + Send + Sync;

impl fmt::Debug for HostCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostCheck")
    }
}

impl HostCheck {
    /// Against this host's interfaces as they are when a change arrives.
    pub(crate) fn of_host() -> Self {
        Self(Arc::new(|config| {
            desired::check(config, &host_interfaces())
        }))
    }

    /// No check of the host's interfaces (addresses are not managed).
    pub(crate) fn none() -> Self {
        Self(Arc::new(|_| Vec::new()))
    }

    /// This check, then `extra` (what the VRRP settings require of a
    /// config, `vrrp::config_check`).
    pub(crate) fn and(
        self,
        extra: impl Fn(&Config) -> Vec<FieldError> + Send + Sync + 'static,
    ) -> Self {
        let first = self.0;
        Self(Arc::new(move |config| {
            let mut out = first(config);
            out.extend(extra(config));
            out
        }))
    }

    pub(crate) fn check(&self, config: &Config) -> Vec<FieldError> {
        (self.0)(config)
    }
}

/// The host's interfaces and addresses from `getifaddrs`, synchronously
/// (the control task's thread may block). Every address counts as the
/// host's: one poolgate added contains only itself, so it passes as "on
/// the host".
fn host_interfaces() -> Vec<HostInterface> {
    let mut interfaces: BTreeMap<String, HostInterface> = BTreeMap::new();
    let Ok(entries) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    for entry in entries {
        let interface = interfaces
            .entry(entry.interface_name.clone())
            .or_insert_with(|| HostInterface {
                name: entry.interface_name.clone(),
                index: 0,
                mac: None,
                addresses: Vec::new(),
            });
        let address = entry.address.as_ref();
        let netmask = entry.netmask.as_ref();
        let pair = match (
            address.and_then(|a| a.as_sockaddr_in()),
            netmask.and_then(|m| m.as_sockaddr_in()),
            address.and_then(|a| a.as_sockaddr_in6()),
            netmask.and_then(|m| m.as_sockaddr_in6()),
        ) {
            (Some(a), Some(m), _, _) => Some((IpAddr::V4(a.ip()), m.ip().to_bits().count_ones())),
            (Some(a), None, _, _) => Some((IpAddr::V4(a.ip()), 32)),
            (_, _, Some(a), Some(m)) => Some((IpAddr::V6(a.ip()), m.ip().to_bits().count_ones())),
            (_, _, Some(a), None) => Some((IpAddr::V6(a.ip()), 128)),
            _ => None,
        };
        if let Some((ip, prefix_len)) = pair {
            interface.addresses.push(HostAddress {
                ip,
                prefix_len: u8::try_from(prefix_len).unwrap_or(0),
                ours: false,
            });
        }
    }
    interfaces.into_values().collect()
}

/// Counters of address ownership, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct AddressStats {
    added: AtomicU64,
    removed: AtomicU64,
    failures: AtomicU64,
    held: AtomicU64,
}

impl Render for AddressStats {
    fn render(&self, out: &mut MetricsWriter) {
        let Self {
            added,
            removed,
            failures,
            held,
        } = self;
        out.counter(
            "poolgate_addresses_added_total",
            "Addresses poolgate added to an interface for a virtual service or listener.",
            added,
        );
        out.counter(
            "poolgate_addresses_removed_total",
            "Addresses poolgate removed because nothing uses them any more.",
            removed,
        );
        out.counter(
            "poolgate_address_failures_total",
            "Additions, removals and announcements of addresses the host refused.",
            failures,
        );
        out.family(
            "poolgate_addresses_held",
            Kind::Gauge,
            "Addresses poolgate currently holds on the host's interfaces.",
        )
        .sample(&[], held.load(Relaxed));
    }
}

/// Make the host hold the addresses of the committed config until `stop`,
/// then give them all up. The first pass is done before this returns, so
/// listeners bound after it find their addresses.
pub(crate) async fn spawn(
    control: ControlHandle,
    events: EventLog,
    stats: Arc<AddressStats>,
    mut holder: tokio::sync::watch::Receiver<Holder>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let mut owner = match Netlink::open() {
        Ok(netlink) => Owner {
            netlink,
            events,
            stats,
            failing: BTreeSet::new(),
            problems: Vec::new(),
        },
        Err(error) => {
            tracing::warn!(%error, "Cannot manage addresses; virtual service addresses must be configured by hand");
            events.record(NewEvent::new(
                EventKind::System,
                format!("Addresses are not managed: {error}"),
            ));
            return tokio::spawn(async {});
        }
    };
    let mut committed = control.subscribe();
    owner
        .reconcile(&control.desired().config, *holder.borrow_and_update())
        .await;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = committed.recv() => {}
                _ = tick.tick() => {}
                changed = holder.changed() => if changed.is_err() { break },
            }
            let holder = *holder.borrow_and_update();
            owner.reconcile(&control.desired().config, holder).await;
        }
        owner.release().await;
    })
}

/// The task's state: the applier and what it already reported.
struct Owner {
    netlink: Netlink,
    events: EventLog,
    stats: Arc<AddressStats>,
    /// Addresses whose last step failed: reported once, not every pass.
    failing: BTreeSet<IpAddr>,
    problems: Vec<FieldError>,
}

impl Owner {
    async fn reconcile(&mut self, config: &Config, holder: Holder) {
        let host = match self.netlink.interfaces().await {
            Ok(host) => host,
            Err(error) => {
                tracing::warn!(%error, "Cannot read the host's interfaces");
                return;
            }
        };
        let desired = desired::desired(config, &host);
        if desired.problems != self.problems {
            for problem in &desired.problems {
                tracing::warn!(field = %problem.path, "Address not placed: {}", problem.message);
                self.events.record(NewEvent::new(
                    EventKind::System,
                    format!(
                        "Address of {} not placed: {}",
                        problem.path, problem.message
                    ),
                ));
            }
            self.problems = desired.problems.clone();
        }
        match holder {
            Holder::Poolgate => self.apply(&desired, &host).await,
            // keepalived holds them: give up any poolgate still has.
            Holder::Keepalived => self.apply(&Desired::default(), &host).await,
        }
    }

    /// Remove every address poolgate holds (at shutdown).
    async fn release(&mut self) {
        match self.netlink.interfaces().await {
            Ok(host) => self.apply(&Desired::default(), &host).await,
            Err(error) => {
                tracing::warn!(%error, "Cannot read the host's interfaces; addresses stay")
            }
        }
    }

    async fn apply(&mut self, desired: &Desired, host: &[HostInterface]) {
        for step in desired::plan(desired, host) {
            let (ip, name) = match &step {
                Step::Add { ip, interface } | Step::Remove { ip, interface } => (*ip, interface),
            };
            let Some(interface) = host.iter().find(|i| &i.name == name) else {
                continue;
            };
            let users = desired
                .wanted
                .get(&ip)
                .map(|w| w.users.join(", "))
                .unwrap_or_default();
            let detail = serde_json::json!({
                "address": ip.to_string(),
                "interface": interface.name,
                "users": users,
            });
            let result = match step {
                Step::Add { .. } => self.netlink.add(interface, ip).await,
                Step::Remove { .. } => self.netlink.remove(interface, ip).await,
            };
            match (result, &step) {
                (Ok(()), Step::Add { .. }) => {
                    self.failing.remove(&ip);
                    self.stats.added.fetch_add(1, Relaxed);
                    tracing::info!(address = %ip, interface = %interface.name, %users, "Address added");
                    self.events.record(
                        NewEvent::new(
                            EventKind::System,
                            format!("Added address {ip} to {} for {users}", interface.name),
                        )
                        .detail(detail),
                    );
                    self.announce(interface, ip).await;
                }
                (Ok(()), Step::Remove { .. }) => {
                    self.failing.remove(&ip);
                    self.stats.removed.fetch_add(1, Relaxed);
                    tracing::info!(address = %ip, interface = %interface.name, "Address removed");
                    self.events.record(
                        NewEvent::new(
                            EventKind::System,
                            format!(
                                "Removed address {ip} from {}: nothing uses it",
                                interface.name
                            ),
                        )
                        .detail(detail),
                    );
                }
                (Err(error), step) => {
                    self.stats.failures.fetch_add(1, Relaxed);
                    let verb = match step {
                        Step::Add { .. } => "add",
                        Step::Remove { .. } => "remove",
                    };
                    if self.failing.insert(ip) {
                        tracing::error!(address = %ip, interface = %interface.name, %error, "Cannot {verb} address");
                        self.events.record(
                            NewEvent::new(
                                EventKind::System,
                                format!(
                                    "Cannot {verb} address {ip} on {}: {error}",
                                    interface.name
                                ),
                            )
                            .detail(detail),
                        );
                    }
                }
            }
        }
        if let Ok(host) = self.netlink.interfaces().await {
            let held = host
                .iter()
                .flat_map(|i| &i.addresses)
                .filter(|a| a.ours)
                .count();
            self.stats.held.store(held as u64, Relaxed);
        }
    }

    /// A gratuitous ARP or unsolicited NA for a newly added address.
    async fn announce(&self, interface: &HostInterface, ip: IpAddr) {
        let Some(mac) = interface.mac else {
            return;
        };
        let (name, index) = (interface.name.clone(), interface.index);
        let sent = tokio::task::spawn_blocking(move || match ip {
            IpAddr::V4(v4) => announce::send_garp(&name, index, mac, v4),
            IpAddr::V6(v6) => announce::send_na(index, mac, v6),
        })
        .await;
        let error = match sent {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        self.stats.failures.fetch_add(1, Relaxed);
        tracing::warn!(address = %ip, interface = %interface.name, %error, "Cannot announce address");
        self.events.record(NewEvent::new(
            EventKind::System,
            format!(
                "Cannot announce address {ip} on {}: {error}",
                interface.name
            ),
        ));
    }
}
