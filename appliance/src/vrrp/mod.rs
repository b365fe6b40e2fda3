//! VRRP of an HA pair, with keepalived: the two appliances share the VIP
//! set of the pool config (and an optional management address); the
//! master holds it, the backup takes it over within about three advert
//! intervals when the master's adverts stop, at once when the master gives
//! it up (its poolgate stopped serving, its link went down).
//!
//! * [`settings`]: this appliance's VRRP settings (kept in the settings
//!   store under [`SETTINGS_KEY`], never synced to the peer), validated
//!   field by field;
//! * [`render`]: keepalived.conf (VRRPv3 unicast, one instance per family
//!   in one sync group, GARP/NA bursts, the health check, the notify FIFO)
//!   and the nftables rule that admits VRRP from the peer only;
//! * [`health`]: the health file poolgate keeps fresh while it serves, and
//!   the `poolgate vrrp-check` keepalived runs on it;
//! * [`state`]: keepalived's state per instance, from its notify FIFO.
//!
//! With settings stored, address ownership (`net::addresses`) switches to
//! [`Holder::Keepalived`]: poolgate no longer adds the VIPs itself, its
//! listeners bind with `IP_FREEBIND` so the backup is ready before it holds
//! them, and the host check of a config change stays. The rendered text is
//! handed to the root step (`poolgate system apply-vrrp`) when the layout
//! names a request file, and shown by `GET /api/v1/ha/vrrp`.
//!
//! Invariants: settings that are stored passed [`settings::validate`]; the
//! text shown is rendered from the stored settings and the committed config
//! against this host now; every state change keepalived reports, and every
//! settings change, is an event (`system`).
//! Design note: `docs/decisions/1000-vrrp-keepalived.md`.

pub mod health;
pub(crate) mod render;
pub(crate) mod settings;
pub(crate) mod state;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::{EventKind, EventLog, NewEvent};
use crate::net::addresses::{self, Holder};
use crate::store::{Store, StoreError};
use crate::web::FieldProblem;

pub use health::{Verdict, check};
pub use settings::VrrpSettings;
pub use state::{InstanceState, VrrpState};

pub(crate) const SETTINGS_KEY: &str = "vrrp.settings";
/// Under the data directory.
const HEALTH_FILE: &str = "vrrp-health";
const NOTIFY_FIFO: &str = "vrrp-notify.fifo";

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("invalid VRRP settings")]
    Invalid(Vec<FieldProblem>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored VRRP settings cannot be read: {0}")]
    Stored(String),
}

/// What `GET /api/v1/ha/vrrp` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VrrpView {
    /// `None`: VRRP is off and poolgate holds its addresses itself.
    pub settings: Option<VrrpSettings>,
    /// `poolgate` or `keepalived`.
    pub addresses_held_by: &'static str,
    /// keepalived's last reported state per instance and group.
    pub instances: Vec<InstanceState>,
    /// The keepalived.conf the settings and the committed config give on
    /// this host now.
    pub keepalived_conf: Option<String>,
    /// Why no text can be rendered (a VIP of a family with no source and peer).
    pub problems: Vec<FieldProblem>,
}

/// This appliance's VRRP: settings, state, and the tasks that follow them.
#[derive(Debug)]
pub struct Vrrp {
    store: Store,
    events: EventLog,
    settings: watch::Sender<Option<VrrpSettings>>,
    holder: watch::Sender<Holder>,
    states: watch::Sender<state::States>,
    paths: render::Paths,
}

fn holder_of(settings: &Option<VrrpSettings>) -> Holder {
    match settings {
        Some(_) => Holder::Keepalived,
        None => Holder::Poolgate,
    }
}

impl Vrrp {
    /// The stored settings, with the health file and FIFO in `data_dir`.
    pub(crate) fn load(
        store: Store,
        events: EventLog,
        data_dir: &Path,
    ) -> Result<Arc<Self>, VrrpError> {
        let settings = match store.setting(SETTINGS_KEY)? {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<VrrpSettings>(&text)
                    .map_err(|e| VrrpError::Stored(e.to_string()))?,
            ),
        };
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let paths = render::Paths {
            health_file: data_dir.join(HEALTH_FILE),
            notify_fifo: data_dir.join(NOTIFY_FIFO),
            poolgate: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/poolgate".into()),
            script_user: nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map_or_else(|| "root".to_owned(), |user| user.name),
        };
        Ok(Arc::new(Self {
            store,
            events,
            holder: watch::Sender::new(holder_of(&settings)),
            settings: watch::Sender::new(settings),
            states: watch::Sender::new(state::States::new()),
            paths,
        }))
    }

    /// Who holds the addresses, as it changes (`net::addresses::spawn`).
    pub(crate) fn holder(&self) -> watch::Receiver<Holder> {
        self.holder.subscribe()
    }

    pub(crate) fn settings(&self) -> Option<VrrpSettings> {
        self.settings.borrow().clone()
    }

    /// Validate and store `settings` (`None` turns VRRP off); 422 naming
    /// the field, nothing stored, when they are invalid or cannot hold the
    /// VIPs of `config`.
    pub(crate) fn set(
        &self,
        settings: Option<VrrpSettings>,
        config: &Config,
        actor: &str,
    ) -> Result<(), VrrpError> {
        match &settings {
            Some(new) => {
                let mut problems = settings::validate(new);
                if problems.is_empty()
                    && let Err(more) = render::render(new, &vips(config), &self.paths)
                {
                    problems = more;
                }
                if !problems.is_empty() {
                    return Err(VrrpError::Invalid(problems));
                }
                let text = serde_json::to_string(new).expect("settings serialise");
                self.store.set_setting(SETTINGS_KEY, &text)?;
            }
            None => self.store.remove_setting(SETTINGS_KEY)?,
        }
        let message = match &settings {
            Some(s) => format!(
                "VRRP settings changed by {actor}: router {} priority {} on {}; keepalived holds the addresses",
                s.virtual_router_id, s.priority, s.interface
            ),
            None => format!("VRRP turned off by {actor}; poolgate holds its addresses itself"),
        };
        tracing::info!(%actor, "{message}");
        self.events.record(
            NewEvent::new(EventKind::System, message)
                .detail(serde_json::json!({ "actor": actor, "settings": settings })),
        );
        self.holder.send_replace(holder_of(&settings));
        self.settings.send_replace(settings);
        Ok(())
    }

    /// keepalived.conf for the stored settings and `config` on this host.
    pub(crate) fn render(&self, config: &Config) -> Option<Result<String, Vec<FieldProblem>>> {
        let settings = self.settings.borrow().clone()?;
        Some(
            self.paths
                .check()
                .map_err(|message| {
                    vec![FieldProblem {
                        field: "data_dir".to_owned(),
                        message,
                        line: None,
                        column: None,
                    }]
                })
                .and_then(|()| render::render(&settings, &vips(config), &self.paths)),
        )
    }

    pub(crate) fn view(&self, config: &Config) -> VrrpView {
        let settings = self.settings();
        let (keepalived_conf, problems) = match self.render(config) {
            None => (None, Vec::new()),
            Some(Ok(text)) => (Some(text), Vec::new()),
            Some(Err(problems)) => (None, problems),
        };
        VrrpView {
            addresses_held_by: match holder_of(&settings) {
                Holder::Poolgate => "poolgate",
                Holder::Keepalived => "keepalived",
            },
            settings,
            instances: self.states.borrow().values().cloned().collect(),
            keepalived_conf,
            problems,
        }
    }

    /// Keep the health file fresh while `liveness` holds and follow
    /// keepalived's FIFO, until `stop`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        liveness: health::Liveness,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let enabled = {
            let (tx, rx) = watch::channel(self.settings.borrow().is_some());
            let mut settings = self.settings.subscribe();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        changed = settings.changed() => if changed.is_err() { return },
                    }
                    let on = settings.borrow_and_update().is_some();
                    tx.send_replace(on);
                }
            });
            rx
        };
        let writer = tokio::spawn(health::run(
            self.paths.health_file.clone(),
            liveness,
            enabled,
            stop.clone(),
        ));
        let reader = tokio::spawn(state::follow(
            self.paths.notify_fifo.clone(),
            self.states.clone(),
            self.events.clone(),
            stop,
        ));
        tokio::spawn(async move {
            let _ = writer.await;
            let _ = reader.await;
        })
    }
}

/// The VIPs keepalived holds, from the config against this host.
fn vips(config: &Config) -> render::Vips {
    addresses::vrrp_wanted(config)
        .wanted
        .into_iter()
        .map(|(ip, wanted)| (ip, (wanted.interface, wanted.users.join(", "))))
        .collect()
}

#[cfg(test)]
mod tests;
