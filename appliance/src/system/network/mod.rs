//! The appliance's own network: host name, interfaces (DHCP or static IPv4
//! and IPv6, SLAAC, MTU), 802.1Q VLANs, default gateways, static routes,
//! resolvers, NTP servers and the time zone. Kept apart from the pool
//! config (an HA peer shares the pool config, never these) in the settings
//! store, validated by `validate` (every problem names its field), rendered
//! for systemd-networkd and chrony by `render`, applied by `apply` through
//! a root-owned step, and shown with the host's live state by `observe`.
//!
//! Safe apply: a change is applied at once and is *pending* until it is
//! confirmed (`POST /api/v1/system/network/confirm`) before its deadline
//! ([`CONFIRM_WINDOW`]); unconfirmed, the previous settings are applied
//! again. The pending change is stored before it is applied, so a restart
//! in between reverts too. Only confirmed settings are kept.
//!
//! Invariants:
//! * Settings that reach `apply` have passed `validate`; the root step
//!   validates them again.
//! * At most one change is pending; another waits for its confirmation or
//!   its revert (409).
//! * Every apply, confirmation and revert is an event (`system`).

mod apply;
mod model;
mod observe;
mod render;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// One fixed command, bounded in time (the VRRP root step runs its own).
pub(crate) use apply::run as run_bounded;
pub use apply::{ApplyError, ApplyResult, NetworkLayout, serve_request};
pub use model::{InterfaceSettings, NetworkSettings, RouteSettings, VlanSettings};
pub use observe::Observed;
pub use validate::Problem;

use crate::control::pending::{ConfirmError, Pending};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::store::{Store, StoreError};

/// How long a change waits for its confirmation.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(120);
const SETTINGS_KEY: &str = "network.settings";
const PENDING_KEY: &str = "network.pending";

/// A change applied and waiting for its confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PendingChange {
    pub id: u64,
    pub settings: NetworkSettings,
    /// What is applied again unless this is confirmed.
    pub previous: NetworkSettings,
    /// RFC 3339.
    pub deadline: String,
    /// What the change does, one line each.
    pub changes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("this system's layout does not let poolgate manage the network")]
    NotManaged,
    #[error("invalid network settings")]
    Invalid(Vec<Problem>),
    #[error(
        "network change {0} is waiting for its confirmation; confirm it or wait for its revert"
    )]
    Pending(u64),
    #[error("no network change is waiting for confirmation")]
    NothingPending,
    #[error("the network change's deadline has passed; it is being reverted")]
    Expired,
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the network task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What `GET /api/v1/system/network` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct NetworkView {
    /// Whether poolgate applies settings here (the image) or only shows
    /// the host's network.
    pub managed: bool,
    /// The confirmed settings.
    pub settings: NetworkSettings,
    pub pending: Option<PendingChange>,
    pub observed: Observed,
    pub confirm_window_s: u64,
}

#[derive(Debug)]
struct Inner {
    current: NetworkSettings,
    /// The change awaiting confirmation until its deadline: the same
    /// confirm-or-revert rules as a move of the admin listener.
    pending: Pending<PendingChange, time::OffsetDateTime>,
}

/// The one owner of the network settings.
#[derive(Debug)]
pub struct Network {
    layout: Option<NetworkLayout>,
    store: Store,
    events: EventLog,
    window: Duration,
    inner: Mutex<Inner>,
    changed: Notify,
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Network {
    /// Load the confirmed settings; a change still pending from before a
    /// restart was never confirmed, so the previous settings are applied
    /// again.
    pub(crate) async fn load(
        layout: Option<NetworkLayout>,
        store: Store,
        events: EventLog,
        window: Duration,
    ) -> Result<Arc<Self>, NetworkError> {
        let read = |key: &'static str| {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.setting(key))
        };
        let current = read(SETTINGS_KEY)
            .await??
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        let pending: Option<PendingChange> = read(PENDING_KEY)
            .await??
            .and_then(|json| serde_json::from_str(&json).ok());
        let network = Arc::new(Self {
            layout,
            store,
            events,
            window,
            inner: Mutex::new(Inner {
                current,
                pending: Pending::default(),
            }),
            changed: Notify::new(),
        });
        if let Some(pending) = pending {
            network
                .revert(pending, "poolgate restarted before it was confirmed")
                .await;
        }
        Ok(network)
    }

    pub(crate) async fn view(&self) -> NetworkView {
        let (settings, pending) = {
            let inner = self.inner.lock().await;
            (inner.current.clone(), inner.pending.revert().cloned())
        };
        let observed = tokio::task::spawn_blocking(observe::observe)
            .await
            .unwrap_or_default();
        NetworkView {
            managed: self.layout.is_some(),
            settings,
            pending,
            observed,
            confirm_window_s: self.window.as_secs(),
        }
    }

    fn check(&self, settings: &NetworkSettings) -> Result<(), NetworkError> {
        let layout = self.layout.as_ref().ok_or(NetworkError::NotManaged)?;
        validate::validate(settings, |zone| layout.zone_exists(zone))
            .map(|_| ())
            .map_err(NetworkError::Invalid)
    }

    /// What `settings` would change, writing nothing.
    pub(crate) async fn preview(
        &self,
        settings: &NetworkSettings,
    ) -> Result<Vec<String>, NetworkError> {
        self.check(settings)?;
        Ok(changes(&self.inner.lock().await.current, settings))
    }

    /// Apply `settings` now, pending until confirmed. `actor` is who asked.
    pub(crate) async fn propose(
        &self,
        settings: NetworkSettings,
        actor: &str,
    ) -> Result<PendingChange, NetworkError> {
        self.check(&settings)?;
        let mut inner = self.inner.lock().await;
        if let Some(pending) = inner.pending.revert() {
            return Err(NetworkError::Pending(pending.id));
        }
        let deadline = now() + self.window;
        let pending = PendingChange {
            id: now().unix_timestamp_nanos().unsigned_abs() as u64,
            changes: changes(&inner.current, &settings),
            previous: inner.current.clone(),
            settings,
            deadline: crate::clock::rfc3339(deadline),
        };
        // Stored first: a restart before the confirmation reverts.
        self.store_setting(PENDING_KEY, &pending).await?;
        let said = match self.apply(pending.id, &pending.settings).await {
            Ok(said) => said,
            Err(error) => {
                self.clear_setting(PENDING_KEY).await?;
                // Half-written files are put back as they were.
                let _ = self.apply(pending.id + 1, &pending.previous).await;
                return Err(error);
            }
        };
        let mut detail = serde_json::json!({ "id": pending.id, "changes": pending.changes });
        // A reload that failed (chrony not running, say): the files are
        // written and take effect at the next boot; the admin sees why not now.
        if !said.is_empty() {
            detail["reload"] = said.into();
        }
        self.events.record(
            NewEvent::new(
                EventKind::System,
                format!(
                    "Network settings applied by {actor}; confirm by {} or they are reverted",
                    pending.deadline
                ),
            )
            .detail(detail),
        );
        inner
            .pending
            .start(pending.clone(), deadline)
            .expect("nothing awaits confirmation: checked under the same lock");
        drop(inner);
        self.changed.notify_one();
        Ok(pending)
    }

    /// Keep the pending change.
    pub(crate) async fn confirm(&self, actor: &str) -> Result<NetworkSettings, NetworkError> {
        let mut inner = self.inner.lock().await;
        let pending = inner.pending.confirm(now()).map_err(|error| match error {
            ConfirmError::NothingPending => NetworkError::NothingPending,
            ConfirmError::Expired => NetworkError::Expired,
        })?;
        self.store_setting(SETTINGS_KEY, &pending.settings).await?;
        self.clear_setting(PENDING_KEY).await?;
        inner.current = pending.settings.clone();
        self.events.record(NewEvent::new(
            EventKind::System,
            format!("Network settings confirmed by {actor}"),
        ));
        drop(inner);
        self.changed.notify_one();
        Ok(pending.settings)
    }

    /// Apply the previous settings of `pending`, which no longer awaits
    /// confirmation, again. The caller holds the lock (or is alone, at
    /// start), so no new change is applied in between.
    async fn revert(&self, pending: PendingChange, why: &str) {
        let result = self.apply(pending.id + 1, &pending.previous).await;
        let _ = self.clear_setting(PENDING_KEY).await;
        let message = match &result {
            Ok(_) => format!("Network change reverted to the previous settings: {why}"),
            Err(error) => {
                format!("Network change not confirmed ({why}); reverting failed: {error}")
            }
        };
        match &result {
            Ok(_) => tracing::warn!("{message}"),
            Err(_) => tracing::error!("{message}"),
        }
        self.events.record(
            NewEvent::new(EventKind::System, message)
                .detail(serde_json::json!({ "id": pending.id })),
        );
    }

    /// Revert a pending change once its deadline passes, until `shutdown`.
    pub(crate) async fn run_deadlines(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let deadline = self.inner.lock().await.pending.deadline();
            let wait = deadline.map(|d| Duration::try_from(d - now()).unwrap_or(Duration::ZERO));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => continue,
                () = async {
                    match wait {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let mut inner = self.inner.lock().await;
            if let Some(pending) = inner.pending.expire(now()) {
                self.revert(pending, "not confirmed before its deadline")
                    .await;
            }
        }
    }

    async fn apply(&self, id: u64, settings: &NetworkSettings) -> Result<String, NetworkError> {
        let layout = self.layout.clone().ok_or(NetworkError::NotManaged)?;
        let settings = settings.clone();
        Ok(tokio::task::spawn_blocking(move || apply::apply(&layout, id, &settings)).await??)
    }

    async fn store_setting<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), NetworkError> {
        let json = serde_json::to_string(value).expect("settings serialise");
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.set_setting(key, &json)).await??;
        Ok(())
    }

    async fn clear_setting(&self, key: &'static str) -> Result<(), NetworkError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.remove_setting(key)).await??;
        Ok(())
    }
}

/// What going from `old` to `new` changes, one line per field that does.
fn changes(old: &NetworkSettings, new: &NetworkSettings) -> Vec<String> {
    let show = |value: serde_json::Value| match value {
        serde_json::Value::Null => "none".to_owned(),
        other => other.to_string(),
    };
    let (old, new) = (
        serde_json::to_value(old).expect("settings serialise"),
        serde_json::to_value(new).expect("settings serialise"),
    );
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    new.iter()
        .filter(|(key, value)| old.get(*key) != Some(value))
        .map(|(key, value)| {
            format!(
                "{key}: {} (was {})",
                show(value.clone()),
                show(old.get(key).cloned().unwrap_or_default())
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
