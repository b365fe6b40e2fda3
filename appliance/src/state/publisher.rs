//! The one writer of `PoolView`. Config commits, admin-state changes, health
//! transitions and drain progress arrive as `Update`s on a channel; the
//! publisher applies them to its `Inputs` (as a diff for config commits),
//! builds the next generation and sends it on the watch channel. Readers only
//! ever see whole generations. Config versions only move forward: an update
//! with an older version (or another config under the current one) is
//! refused.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::view::{
    CounterTable, DrainProgress, Health, HealthStatus, Inputs, PoolView, ServiceCounterTable,
};
use crate::config::MemberKey;
use crate::config::{AdminState, Config, ConfigDiff};
use crate::health::ca::CaBundles;

/// A change to what the view is built from.
#[derive(Debug)]
pub enum Update {
    /// A config was committed to the store; `diff` is from the previous one.
    Config {
        config: Arc<Config>,
        version: i64,
        diff: ConfigDiff,
    },
    /// A config that replaces the one in force whatever its version: the
    /// HA peer's history won over this appliance's after a split
    /// (`crate::ha`), so the version may move back.
    Replace {
        config: Arc<Config>,
        version: i64,
        diff: ConfigDiff,
    },
    AdminState {
        member: MemberKey,
        state: AdminState,
    },
    Health {
        member: MemberKey,
        monitor: String,
        /// Which of the member's addresses was probed.
        address: IpAddr,
        status: HealthStatus,
    },
    Drain {
        member: MemberKey,
        progress: Option<DrainProgress>,
    },
    /// The set of CA bundles changed (one uploaded, replaced or deleted).
    CaBundles(Arc<CaBundles>),
}

#[cfg(test)]
impl Update {
    /// A health update for the first address of `member` in `config` (or
    /// an unspecified address when the config has no such member).
    pub(crate) fn health_of(
        config: &Config,
        member: MemberKey,
        monitor: &str,
        status: HealthStatus,
    ) -> Self {
        let address = config
            .pool(&member.0)
            .and_then(|p| p.members.iter().find(|m| m.name == member.1))
            .map_or(IpAddr::from([0, 0, 0, 0]), |m| m.addresses[0]);
        Self::Health {
            member,
            monitor: monitor.to_owned(),
            address,
            status,
        }
    }
}

impl Inputs {
    /// Inputs for a first generation: admin states as stored, health unknown.
    pub fn new(
        config: Arc<Config>,
        config_version: i64,
        admin: BTreeMap<MemberKey, AdminState>,
    ) -> Self {
        let mut inputs = Self {
            config,
            config_version,
            admin,
            health: BTreeMap::new(),
            drain: BTreeMap::new(),
            counters: CounterTable::new(),
            service_counters: ServiceCounterTable::new(),
            ca_bundles: Arc::default(),
        };
        inputs.sync_counters();
        inputs
    }

    /// The CA bundles the first generation carries.
    pub(crate) fn with_ca_bundles(mut self, bundles: Arc<CaBundles>) -> Self {
        self.ca_bundles = bundles;
        self
    }

    /// Apply one update. Returns whether anything changed.
    ///
    /// A config older than the one held, or another config under the same
    /// version, is refused (logged and ignored): versions only move forward,
    /// so a late or replayed update cannot roll the view back.
    pub(crate) fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Config {
                config,
                version,
                diff,
            } => {
                if version < self.config_version
                    || (version == self.config_version && config != self.config)
                {
                    tracing::warn!(
                        version,
                        current = self.config_version,
                        "Config update refused: not newer than the config in force"
                    );
                    return false;
                }
                self.take_config(config, version, &diff);
                true
            }
            Update::Replace {
                config,
                version,
                diff,
            } => {
                self.take_config(config, version, &diff);
                true
            }
            Update::AdminState { member, state } => {
                if !self.has_member(&member) {
                    return false;
                }
                let changed = self.admin.insert(member, state) != Some(state);
                self.settle_drain();
                changed
            }
            Update::Health {
                member,
                monitor,
                address,
                status,
            } => {
                if !self.has_address(&member, address) || self.config.monitor(&monitor).is_none() {
                    return false;
                }
                let counters = self.counters.get(&member).cloned();
                let before = self
                    .health
                    .insert((member, monitor, address), status.clone());
                if let Some(counters) = counters
                    && before.as_ref().map(|b| b.state) != Some(status.state)
                {
                    match status.state {
                        Health::Up => counters.went_up.fetch_add(1, Relaxed),
                        Health::Down => counters.went_down.fetch_add(1, Relaxed),
                        Health::Unknown => 0,
                    };
                }
                before != Some(status)
            }
            Update::Drain { member, progress } => {
                if !self.has_member(&member) {
                    return false;
                }
                match progress {
                    // Progress computed just before the member left draining.
                    Some(_) if self.admin.get(&member) != Some(&AdminState::Draining) => false,
                    Some(progress) => self.drain.insert(member, progress.clone()) != Some(progress),
                    None => self.drain.remove(&member).is_some(),
                }
            }
            Update::CaBundles(bundles) => {
                let changed = bundles != self.ca_bundles;
                self.ca_bundles = bundles;
                changed
            }
        }
    }

    fn take_config(&mut self, config: Arc<Config>, version: i64, diff: &ConfigDiff) {
        for key in diff.members_removed.iter().chain(&diff.members_changed) {
            self.health.retain(|(member, _, _), _| member != key);
        }
        self.health.retain(|(_, monitor, _), _| {
            !diff.monitors_removed.contains(monitor) && !diff.monitors_changed.contains(monitor)
        });
        diff.apply_admin(&mut self.admin);
        self.settle_drain();
        self.config = config;
        self.config_version = version;
        self.sync_counters();
    }

    /// Drain progress is kept only for members that are draining: one
    /// removed from the config, or set to another state by a config or an
    /// action, loses it.
    fn settle_drain(&mut self) {
        let admin = &self.admin;
        self.drain
            .retain(|key, _| admin.get(key) == Some(&AdminState::Draining));
    }

    fn has_member(&self, (pool, member): &MemberKey) -> bool {
        self.config
            .pool(pool)
            .is_some_and(|p| p.members.iter().any(|m| &m.name == member))
    }

    fn has_address(&self, (pool, member): &MemberKey, address: IpAddr) -> bool {
        self.config.pool(pool).is_some_and(|p| {
            p.members
                .iter()
                .any(|m| &m.name == member && m.addresses.contains(&address))
        })
    }

    /// Keep counter handles of members that stay, add new ones, drop the rest.
    fn sync_counters(&mut self) {
        let mut counters = CounterTable::new();
        for pool in &self.config.pools {
            for member in &pool.members {
                let key = (pool.name.clone(), member.name.clone());
                let handle = self.counters.remove(&key).unwrap_or_default();
                counters.insert(key, handle);
            }
        }
        self.counters = counters;
        let mut services = ServiceCounterTable::new();
        for service in &self.config.virtual_services {
            let handle = self
                .service_counters
                .remove(&service.name)
                .unwrap_or_default();
            services.insert(service.name.clone(), handle);
        }
        self.service_counters = services;
    }
}

/// Handle for sending updates to the publisher and reading its views.
#[derive(Debug, Clone)]
pub struct PublisherHandle {
    updates: mpsc::Sender<(Update, Option<oneshot::Sender<u64>>)>,
    views: watch::Receiver<Arc<PoolView>>,
}

impl PublisherHandle {
    /// The latest generation. Clone the `Arc` and drop the borrow at once.
    pub(crate) fn current(&self) -> Arc<PoolView> {
        Arc::clone(&self.views.borrow())
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<PoolView>> {
        self.views.clone()
    }

    /// Send an update; returns once a generation that includes it has been
    /// published (its number), or `None` if the publisher has stopped.
    pub(crate) async fn apply(&self, update: Update) -> Option<u64> {
        let (done, published) = oneshot::channel();
        self.updates.send((update, Some(done))).await.ok()?;
        published.await.ok()
    }

    /// Send an update without waiting for it to be published.
    pub(crate) async fn send(&self, update: Update) -> bool {
        self.updates.send((update, None)).await.is_ok()
    }
}

/// Start the publisher with generation 1 built from `inputs`. It stops when
/// `shutdown` is cancelled or every handle is dropped.
pub fn spawn(
    inputs: Inputs,
    shutdown: CancellationToken,
) -> (PublisherHandle, tokio::task::JoinHandle<()>) {
    let first = Arc::new(PoolView::build(&inputs, 1));
    let (views_tx, views_rx) = watch::channel(first);
    let (updates_tx, updates_rx) = mpsc::channel(1024);
    let task = tokio::spawn(run(inputs, updates_rx, views_tx, shutdown));
    (
        PublisherHandle {
            updates: updates_tx,
            views: views_rx,
        },
        task,
    )
}

async fn run(
    mut inputs: Inputs,
    mut updates: mpsc::Receiver<(Update, Option<oneshot::Sender<u64>>)>,
    views: watch::Sender<Arc<PoolView>>,
    shutdown: CancellationToken,
) {
    let mut generation = 1;
    let mut waiting = Vec::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            update = updates.recv() => match update {
                Some(update) => update,
                None => break,
            },
        };
        // Coalesce a burst (many health transitions at once) into one generation.
        let mut changed = false;
        let mut next = Some(first);
        while let Some((update, done)) = next {
            changed |= inputs.apply(update);
            waiting.extend(done);
            next = updates.try_recv().ok();
        }
        if changed {
            generation += 1;
            let view = Arc::new(PoolView::build(&inputs, generation));
            tracing::debug!(generation, "Published pool view");
            views.send_replace(view);
        }
        for done in waiting.drain(..) {
            let _ = done.send(generation);
        }
    }
}
