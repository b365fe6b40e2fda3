//! Health monitors: one target per (member address, monitor) that something
//! uses (a dual-stack member has two addresses, each probed on its own) — a
//! pool's monitor for its members (DNS and registrar eligibility) and each
//! virtual service's monitor for its pool's members. Each target runs on its
//! own task, on its own interval, starting at an offset spread evenly over
//! the first interval so a thousand targets do not fire together; deadlines
//! sit on a shared 10 ms grid so targets due together share a wake-up.
//!
//! Invariants:
//! * Only transitions leave a target (`hysteresis` decides them); each goes
//!   to the publisher as `Update::Health` and into the event log.
//! * A target's state starts `Unknown`, which the view counts as the
//!   monitor's `start` state until the hysteresis decides.
//! * On a config change only targets whose monitor or address changed are
//!   restarted; the others keep probing and keep their state.
//!
//! A member has an address, not a port: a target probes `monitor.port`, else
//! the port its consumer serves (the pool's registrar port, the virtual
//! service's first port) for `tcp`, `tls` and `sip-options`, and 80 / 443 for
//! `http` / `https`.
//!
//! TLS-speaking monitors verify the member's certificate against the
//! monitor's `sni`, else the member's `fqdn`, else its address, with the
//! roots of the monitor's `ca_bundle` (`ca`, published with the view), its
//! `ca_file`, or the public web roots; a refusal is explained from the leaf
//! certificate (`verify`). Each monitor's TLS config sits in one slot its
//! targets share: a replaced bundle is written into the slot, so targets
//! keep their state and use it from their next handshake.

pub mod ca;
mod error;
pub(crate) mod hysteresis;
pub mod probe;
pub(crate) mod sip;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) use hysteresis::{Hysteresis, Transition};
pub(crate) use probe::{ProbeError, ProbeSpec};

use ca::CaBundles;

use crate::config::{Config, MonitorKind};
use crate::config::{Monitor, Pool};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::state::{Health, HealthStatus, PublisherHandle, Update};

/// Set to any value to count probe starts per 10 ms window and log the
/// largest burst at shutdown (used by the health benchmark).
pub(crate) const BURST_STATS_ENV: &str = "POOLGATE_HEALTH_BURST_STATS";

/// One (member address, monitor) pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TargetKey {
    pub pool: String,
    pub member: String,
    pub monitor: String,
    pub address: IpAddr,
}

/// What a target probes; a target is restarted when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetSpec {
    pub monitor: Arc<Monitor>,
    pub address: SocketAddr,
    /// The member's FQDN, the TLS name unless the monitor sets `sni`.
    pub fqdn: Option<String>,
    /// The member has more than one address: its events name this one.
    pub several: bool,
}

/// Every target the config asks for. Pure.
pub(crate) fn desired_targets(config: &Config) -> BTreeMap<TargetKey, TargetSpec> {
    let mut targets = BTreeMap::new();
    let mut add = |pool: &Pool, monitor_name: &str, consumer_port: u16| {
        let Some(monitor) = config.monitor(monitor_name) else {
            return;
        };
        let port = monitor.port.unwrap_or(match monitor.kind {
            MonitorKind::Http => 80,
            MonitorKind::Https => 443,
            MonitorKind::Tcp | MonitorKind::Tls | MonitorKind::SipOptions => consumer_port,
        });
        let monitor = Arc::new(monitor.clone());
        for member in &pool.members {
            for &address in &member.addresses {
                let key = TargetKey {
                    pool: pool.name.clone(),
                    member: member.name.clone(),
                    monitor: monitor_name.to_owned(),
                    address,
                };
                // The pool's own use comes first and wins a shared monitor.
                targets.entry(key).or_insert_with(|| TargetSpec {
                    monitor: Arc::clone(&monitor),
                    address: SocketAddr::new(address, port),
                    fqdn: member.fqdn.clone(),
                    several: member.addresses.len() > 1,
                });
            }
        }
    };
    for pool in &config.pools {
        add(pool, &pool.monitor, pool.registrar_port);
    }
    for service in &config.virtual_services {
        if let Some(pool) = config.pool(&service.pool) {
            // A monitor without a port of its own probes what the service
            // connects to: the member port of its first listening port.
            let port = service
                .member_ports
                .first()
                .copied()
                .unwrap_or(pool.registrar_port);
            add(pool, &service.monitor, port);
        }
    }
    targets
}

/// Which running targets to stop and which desired ones to start (a changed
/// target is in both). Pure.
pub(crate) fn plan(
    running: &BTreeMap<TargetKey, TargetSpec>,
    desired: &BTreeMap<TargetKey, TargetSpec>,
) -> (Vec<TargetKey>, Vec<TargetKey>) {
    let stop = running
        .iter()
        .filter(|(key, spec)| desired.get(*key) != Some(*spec))
        .map(|(key, _)| key.clone())
        .collect();
    let start = desired
        .iter()
        .filter(|(key, spec)| running.get(*key) != Some(*spec))
        .map(|(key, _)| key.clone())
        .collect();
    (stop, start)
}

/// A transition with what people need to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub key: TargetKey,
    pub transition: Transition,
    /// The last failure's reason when going down; `None` when going up.
    pub reason: Option<String>,
    pub since: String,
    /// Name the address in the event (a member with several).
    pub several: bool,
}

/// Probe on the `cadence`'s deadlines (measured from `epoch`, shared by
/// every target), feeding the hysteresis, and send each transition to
/// `reports`. Ends when `stop` is cancelled or the receiver is gone.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_target(
    key: TargetKey,
    several: bool,
    mut hysteresis: Hysteresis,
    epoch: Instant,
    mut cadence: Cadence,
    mut probe: impl Probe,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    // One cancellation registration for the target's life, not one per probe.
    let cancellable = stop.clone();
    cancellable
        .run_until_cancelled(async move {
            let sleep = tokio::time::sleep_until(epoch);
            tokio::pin!(sleep);
            loop {
                let next = epoch + cadence.next_at_or_after(epoch.elapsed());
                sleep.as_mut().reset(next);
                sleep.as_mut().await;
                let result = probe.probe().await;
                if let Err(error) = &result {
                    tracing::debug!(pool = %key.pool, member = %key.member, monitor = %key.monitor, %error, "Probe failed");
                }
                let reason = result.as_ref().err().map(ToString::to_string);
                let Some(transition) = hysteresis.observe(result.is_ok()) else {
                    continue;
                };
                let report = Report {
                    key: key.clone(),
                    transition,
                    reason: (transition.to == Health::Down).then_some(reason).flatten(),
                    since: crate::clock::now_rfc3339(),
                    several,
                };
                if stop.is_cancelled() || reports.send(report).await.is_err() {
                    return;
                }
            }
        })
        .await;
}

/// Width of the grid every probe deadline is rounded up onto. Targets due in
/// the same slot fire on one wake-up of the health thread instead of one
/// each; a slot holds `targets × SLOT / interval` probes (1 % of the targets
/// at a 1 s interval), far under the burst a member or a switch notices.
pub(crate) const SLOT: Duration = Duration::from_millis(10);

/// When one target probes: every `interval` from its `offset`, each deadline
/// rounded up onto the `SLOT` grid. Pure: times are durations since the
/// manager's epoch. Probes missed while the runtime was stalled (or a probe
/// ran long) are skipped, so a target returns to its own phase instead of
/// firing the missed ones back to back or moving in step with the others
/// that were held up.
#[derive(Debug, Clone)]
pub(crate) struct Cadence {
    offset: Duration,
    interval: Duration,
    next: u64,
}

impl Cadence {
    pub(crate) fn new(offset: Duration, interval: Duration) -> Self {
        Self {
            offset,
            interval: interval.max(SLOT),
            next: 0,
        }
    }

    /// The next deadline at or after `now`; each is handed out once.
    pub(crate) fn next_at_or_after(&mut self, now: Duration) -> Duration {
        let mut at = self.deadline(self.next);
        if at < now {
            let behind = now.saturating_sub(self.offset).as_nanos();
            self.next =
                u64::try_from(behind.div_ceil(self.interval.as_nanos())).unwrap_or(u64::MAX);
            at = self.deadline(self.next);
        }
        self.next = self.next.saturating_add(1);
        at
    }

    fn deadline(&self, n: u64) -> Duration {
        let nominal = self.offset.as_nanos() + self.interval.as_nanos() * u128::from(n);
        let slot = SLOT.as_nanos();
        let on_grid = nominal.div_ceil(slot) * slot;
        Duration::from_nanos(u64::try_from(on_grid).unwrap_or(u64::MAX))
    }
}

/// First-probe offsets as fractions of the interval: a random phase, then
/// steps of the golden ratio. Any run of consecutive offsets covers [0, 1)
/// almost evenly (no clusters, unlike independent random draws), and stays
/// even as targets are added later; the random phase keeps two appliances
/// probing the same servers out of step.
#[derive(Debug, Clone)]
pub(crate) struct Spread {
    next: f64,
}

impl Spread {
    const STEP: f64 = 0.618_033_988_749_894_9;

    pub(crate) fn new(phase: f64) -> Self {
        Self {
            next: phase.fract().abs(),
        }
    }

    pub(crate) fn next_offset(&mut self) -> f64 {
        let value = self.next;
        self.next = (self.next + Self::STEP).fract();
        value
    }
}

/// Something that probes one target; the real one is `Prober`, tests script
/// results.
pub(crate) trait Probe: Send {
    fn probe(&mut self) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

struct Prober {
    spec: ProbeSpec,
    stats: Option<(Arc<BurstStats>, std::time::Instant)>,
}

impl Probe for Prober {
    async fn probe(&mut self) -> Result<(), ProbeError> {
        if let Some((stats, epoch)) = &self.stats {
            stats.record(*epoch);
        }
        self.spec.run().await
    }
}

/// Probe starts per 10 ms window, for the benchmark.
#[derive(Debug, Default)]
struct BurstStats {
    windows: Mutex<HashMap<u64, u32>>,
}

impl BurstStats {
    fn record(&self, epoch: std::time::Instant) {
        let window = (epoch.elapsed().as_millis() / 10) as u64;
        if let Ok(mut windows) = self.windows.lock() {
            *windows.entry(window).or_default() += 1;
        }
    }

    fn log(&self, targets: usize) {
        let Ok(windows) = self.windows.lock() else {
            return;
        };
        let probes: u64 = windows.values().map(|&n| u64::from(n)).sum();
        let (max_at, max) = windows
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or((0, 0), |(w, n)| (*w, *n));
        // The first seconds include start-up (every target's first probe and
        // first transition); steady state is what a long-running box sees.
        let steady = windows
            .iter()
            .filter(|(w, _)| **w >= 300)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        tracing::info!(
            targets,
            probes,
            windows = windows.len(),
            max_in_window = max,
            max_at_ms = max_at * 10,
            max_in_window_after_3s = steady,
            "Probe start bursts"
        );
    }
}

/// The TLS client config of every TLS-speaking monitor in use, each in a
/// slot its targets share: a changed CA bundle is written into the slot, so
/// the targets keep running (and their state) and use it from their next
/// handshake. A changed monitor gets a new slot (its targets restart anyway).
#[derive(Default)]
struct TlsSlots {
    slots: HashMap<String, TlsSlotOf>,
}

/// One monitor's slot, with what it was built from.
struct TlsSlotOf {
    monitor: Arc<Monitor>,
    bundle: Option<Arc<ca::CaBundle>>,
    slot: probe::TlsSlot,
}

impl TlsSlots {
    /// Build or rebuild the slots `desired` needs; forget the others.
    fn refresh(&mut self, desired: &BTreeMap<TargetKey, TargetSpec>, bundles: &CaBundles) {
        let mut wanted: HashMap<&str, &Arc<Monitor>> = HashMap::new();
        for (key, spec) in desired {
            if probe::speaks_tls(&spec.monitor) {
                wanted.insert(key.monitor.as_str(), &spec.monitor);
            }
        }
        self.slots
            .retain(|name, _| wanted.contains_key(name.as_str()));
        for (name, monitor) in wanted {
            let bundle = monitor
                .ca_bundle
                .as_ref()
                .and_then(|b| bundles.get(b))
                .cloned();
            match self.slots.get_mut(name) {
                // Same monitor, same bundle: nothing to do.
                Some(held) if held.monitor == *monitor && held.bundle == bundle => {}
                // Same monitor, its bundle replaced: in place.
                Some(held) if held.monitor == *monitor => {
                    if let Ok(mut current) = held.slot.write() {
                        *current = probe::client_config(monitor, bundles);
                    }
                    held.bundle = bundle;
                    tracing::info!(monitor = %name, "CA bundle changed; the next probes use it");
                }
                // A new or changed monitor (whose targets restart): a new slot.
                _ => {
                    let config = probe::client_config(monitor, bundles);
                    self.slots.insert(
                        name.to_owned(),
                        TlsSlotOf {
                            monitor: Arc::clone(monitor),
                            bundle,
                            slot: Arc::new(RwLock::new(config)),
                        },
                    );
                }
            }
        }
    }

    /// The slot of `monitor`, if it speaks TLS.
    fn slot(&self, monitor: &Monitor) -> Option<probe::TlsSlot> {
        self.slots
            .get(&monitor.name)
            .map(|held| Arc::clone(&held.slot))
    }
}

struct Running {
    spec: TargetSpec,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Start the health manager: it follows the published config and keeps one
/// target task per (member, monitor), and records every transition in
/// `events`.
///
/// It runs on its own single-threaded runtime (on a blocking-pool thread):
/// probes are thousands of tiny timer-driven tasks, which on the shared
/// multi-threaded runtime pay for cross-thread wake-ups and work stealing;
/// on their own thread the data plane and the probes cannot delay each other.
pub(crate) fn spawn(
    events: EventLog,
    publisher: PublisherHandle,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(events, publisher, shutdown)),
            Err(error) => {
                tracing::error!(%error, "Cannot start the health monitor runtime; no member is probed");
            }
        }
    })
}

async fn run(events: EventLog, publisher: PublisherHandle, shutdown: CancellationToken) {
    let (reports_tx, reports_rx) = mpsc::channel(1024);
    let reporter = tokio::spawn(report(reports_rx, events, publisher.clone()));
    let stats = std::env::var_os(BURST_STATS_ENV)
        .is_some()
        .then(|| Arc::new(BurstStats::default()));
    let epoch = std::time::Instant::now();
    let grid_epoch = Instant::now();
    let mut views = publisher.subscribe();
    let mut running: BTreeMap<TargetKey, Running> = BTreeMap::new();
    let mut version = None;
    let mut bundles: Arc<CaBundles> = Arc::default();
    let mut tls = TlsSlots::default();
    let mut spread = Spread::new(rand::random());
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        if !Arc::ptr_eq(&bundles, &view.ca_bundles) && version == Some(view.config_version) {
            // Only the bundles changed: new TLS configs in place, from the
            // next handshake on; every target keeps probing and its state.
            bundles = Arc::clone(&view.ca_bundles);
            tls.refresh(&desired_targets(&view.config), &bundles);
        }
        if version != Some(view.config_version) {
            version = Some(view.config_version);
            bundles = Arc::clone(&view.ca_bundles);
            let desired = desired_targets(&view.config);
            let current: BTreeMap<TargetKey, TargetSpec> = running
                .iter()
                .map(|(key, r)| (key.clone(), r.spec.clone()))
                .collect();
            let (stop, start) = plan(&current, &desired);
            for key in &stop {
                if let Some(target) = running.remove(key) {
                    target.stop.cancel();
                }
            }
            // One TLS config per monitor, shared by its targets.
            tls.refresh(&desired, &bundles);
            for key in &start {
                let spec = desired[key].clone();
                let probe = ProbeSpec {
                    monitor: Arc::clone(&spec.monitor),
                    address: spec.address,
                    fqdn: spec.fqdn.clone(),
                    tls: tls.slot(&spec.monitor),
                };
                let stop = shutdown.child_token();
                let interval = spec.monitor.interval;
                let cadence = Cadence::new(interval.mul_f64(spread.next_offset()), interval);
                let hysteresis =
                    Hysteresis::new(spec.monitor.rise, spec.monitor.fall, spec.monitor.start);
                let prober = Prober {
                    spec: probe,
                    stats: stats.clone().map(|stats| (stats, epoch)),
                };
                let task = tokio::spawn(run_target(
                    key.clone(),
                    spec.several,
                    hysteresis,
                    grid_epoch,
                    cadence,
                    prober,
                    reports_tx.clone(),
                    stop.clone(),
                ));
                running.insert(key.clone(), Running { spec, stop, task });
            }
            tracing::info!(
                config_version = view.config_version,
                targets = running.len(),
                stopped = stop.len(),
                started = start.len(),
                "Health targets reconciled"
            );
        }
        drop(view);
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = views.changed() => if changed.is_err() { break },
        }
    }
    if let Some(stats) = &stats {
        stats.log(running.len());
    }
    for target in running.values() {
        target.stop.cancel();
    }
    for (_, target) in running {
        let _ = target.task.await;
    }
    drop(reports_tx);
    let _ = reporter.await;
}

fn health_word(health: Health) -> &'static str {
    match health {
        Health::Unknown => "unknown",
        Health::Up => "up",
        Health::Down => "down",
    }
}

/// Send each transition to the publisher and record it in the event log.
/// Reports that arrive together (a whole pool changing at once) are handled
/// as one batch, which the publisher coalesces into one generation; the
/// event log's writer writes events that arrive together in one
/// transaction.
async fn report(mut reports: mpsc::Receiver<Report>, events: EventLog, publisher: PublisherHandle) {
    let mut batch = Vec::new();
    while reports.recv_many(&mut batch, 1024).await > 0 {
        for report in batch.drain(..) {
            let (update, event) = transition_records(report);
            publisher.send(update).await;
            events.record(event);
        }
    }
}

/// Log one transition; return its publisher update and its event.
fn transition_records(report: Report) -> (Update, NewEvent) {
    let Report {
        key,
        transition,
        reason,
        since,
        several,
    } = report;
    let from = health_word(transition.from);
    let to = health_word(transition.to);
    match &reason {
        Some(reason) => {
            tracing::info!(pool = %key.pool, member = %key.member, monitor = %key.monitor, address = %key.address, from, to, reason = ?reason, "Health changed")
        }
        None => {
            tracing::info!(pool = %key.pool, member = %key.member, monitor = %key.monitor, address = %key.address, from, to, "Health changed")
        }
    }
    let probed = if several {
        format!("{} on {}", key.monitor, key.address)
    } else {
        key.monitor.clone()
    };
    let message = match &reason {
        Some(reason) => format!("{probed}: {from} -> {to} ({reason})"),
        None => format!("{probed}: {from} -> {to}"),
    };
    let event = NewEvent::new(EventKind::Health, message)
        .member(&key.pool, &key.member)
        .detail(serde_json::json!({
            "monitor": key.monitor,
            "address": key.address.to_string(),
            "from": from,
            "to": to,
            "reason": reason,
        }));
    let update = Update::Health {
        member: (key.pool, key.member),
        monitor: key.monitor,
        address: key.address,
        status: HealthStatus {
            state: transition.to,
            reason,
            since: Some(since),
        },
    };
    (update, event)
}

#[cfg(test)]
mod tests;
