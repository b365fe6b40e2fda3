//! VRRP of an HA pair, with keepalived: the two appliances share the VIP
//! set of the pool config (and an optional management address); the
//! master holds it, the backup takes it over within about three advert
//! intervals when the master's adverts stop, at once when the master gives
//! it up (its poolgate stopped serving, its link went down).
//!
//! * [`settings`]: this appliance's VRRP settings (kept in the settings
//!   store under [`SETTINGS_KEY`], never synced to the peer), validated
//!   field by field;
//! * [`render`]: the text of keepalived.conf (VRRPv3 unicast, one instance per family
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

pub(crate) mod apply;
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

pub use apply::{ApplyError, ApplyResult, VrrpLayout, serve_request};
pub use health::{Verdict, check};
pub use settings::VrrpSettings;
pub use state::{InstanceState, VrrpState};

pub(crate) const SETTINGS_KEY: &str = "vrrp.settings";
/// Under the data directory.
const HEALTH_FILE: &str = "vrrp-health";
const NOTIFY_FIFO: &str = "vrrp-notify.fifo";
/// How often the wanted keepalived configuration is compared with the one
/// last applied even without a change (interfaces come and go).
const RESYNC: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// The nftables rule loaded beside it: VRRP from the peer only.
    pub nftables: Option<String>,
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
    /// Where the configuration is handed over; `None`: shown only.
    layout: Option<VrrpLayout>,
    /// Until when (and why) the health file is withheld so keepalived
    /// gives the addresses up (`give_up`).
    giving_up: watch::Sender<Option<health::GiveUp>>,
}

fn holder_of(settings: &Option<VrrpSettings>) -> Holder {
    match settings {
        Some(_) => Holder::Keepalived,
        None => Holder::Poolgate,
    }
}

impl Vrrp {
    /// The stored settings, with the health file and FIFO in `data_dir`
    /// (or where `layout` names them: the root step renders with its
    /// layout's paths, so the image keeps both the same).
    pub(crate) fn load(
        store: Store,
        events: EventLog,
        data_dir: &Path,
        layout: Option<VrrpLayout>,
        settings: watch::Sender<Option<VrrpSettings>>,
    ) -> Result<Arc<Self>, VrrpError> {
        let holder = holder_of(&settings.borrow());
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let paths = match &layout {
            Some(layout) => layout.paths(),
            None => render::Paths {
                health_file: data_dir.join(HEALTH_FILE),
                notify_fifo: data_dir.join(NOTIFY_FIFO),
                poolgate: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/poolgate".into()),
                script_user: nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .ok()
                    .flatten()
                    .map_or_else(|| "root".to_owned(), |user| user.name),
            },
        };
        Ok(Arc::new(Self {
            store,
            events,
            holder: watch::Sender::new(holder),
            settings,
            states: watch::Sender::new(state::States::new()),
            paths,
            layout,
            giving_up: watch::Sender::new(None),
        }))
    }

    /// keepalived's last reported state per instance, as it changes.
    pub(crate) fn states(&self) -> watch::Receiver<state::States> {
        self.states.subscribe()
    }

    /// Make keepalived give the addresses up for `hold`: the health file is
    /// withheld, the check fails, the instances go to FAULT (their adverts
    /// say priority 0, so the peer takes over at once), and after `hold`
    /// the file is written again and keepalived comes back as BACKUP while
    /// the peer holds them (`nopreempt`). How the HA side makes keepalived
    /// follow a role it gave up (a failover, the split-brain rule).
    pub(crate) fn give_up(&self, hold: std::time::Duration, reason: &str) {
        if self.settings.borrow().is_none() {
            return;
        }
        tracing::warn!(
            reason,
            hold_ms = hold.as_millis() as u64,
            "Giving up the VRRP addresses"
        );
        self.giving_up.send_replace(Some(health::GiveUp {
            until: tokio::time::Instant::now() + hold,
            reason: reason.to_owned(),
        }));
    }

    /// How long [`Vrrp::give_up`] must hold for the peer to take over even
    /// if it missed the priority-0 advert: its master-down interval (three
    /// adverts and the skew), one check interval, and a margin.
    pub(crate) fn give_up_hold(&self) -> std::time::Duration {
        let advert = self
            .settings
            .borrow()
            .as_ref()
            .map_or(1000, |s| u64::from(s.advert_interval_cs()) * 10);
        std::time::Duration::from_millis(advert * 4 + 2000)
    }

    /// The stored settings, in the watch [`Vrrp::load`] takes (made before
    /// the control task, whose config check reads it).
    pub(crate) fn stored_settings(
        store: &Store,
    ) -> Result<watch::Sender<Option<VrrpSettings>>, VrrpError> {
        let settings = match store.setting(SETTINGS_KEY)? {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<VrrpSettings>(&text)
                    .map_err(|e| VrrpError::Stored(e.to_string()))?,
            ),
        };
        Ok(watch::Sender::new(settings))
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
            instances: self.states.borrow().values().cloned().collect(),
            keepalived_conf,
            nftables: settings.as_ref().map(render::render_nft),
            problems,
            settings,
        }
    }

    /// What the root step is asked for now.
    fn request(&self, config: &Config) -> apply::ApplyRequest {
        let settings = self.settings();
        let vips = match settings {
            Some(_) => vips(config)
                .into_iter()
                .map(|(address, (interface, _))| apply::Vip { address, interface })
                .collect(),
            None => Vec::new(),
        };
        apply::ApplyRequest {
            id: 0,
            settings,
            vips,
        }
    }

    /// Hand keepalived its configuration whenever the settings, the
    /// committed config or the host change what it must hold, until `stop`.
    /// Every hand-over is an event; a failed one is retried every
    /// [`RESYNC`] and reported once.
    async fn keep_applied(
        self: Arc<Self>,
        layout: VrrpLayout,
        control: crate::control::ControlHandle,
        stop: CancellationToken,
    ) {
        let mut committed = control.subscribe();
        let mut settings = self.settings.subscribe();
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut applied: Option<apply::ApplyRequest> = None;
        let mut failing: Option<String> = None;
        let mut id: u64 = rand::random::<u32>().into();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = committed.recv() => {}
                changed = settings.changed() => if changed.is_err() { return },
            }
            let config = Arc::clone(&control.desired().config);
            let (this, layout_now) = (Arc::clone(&self), layout.clone());
            id += 1;
            let outcome = tokio::task::spawn_blocking(move || {
                let mut request = this.request(&config);
                if applied.as_ref().is_some_and(|done| {
                    done.settings == request.settings && done.vips == request.vips
                }) {
                    return (applied, None);
                }
                request.id = id;
                let result = apply::apply(&layout_now, &request);
                match result {
                    Ok(_) => (Some(request), Some(Ok(()))),
                    Err(error) => (applied, Some(Err(error.to_string()))),
                }
            })
            .await;
            let Ok((now_applied, result)) = outcome else {
                return;
            };
            applied = now_applied;
            match result {
                None => {}
                Some(Ok(())) => {
                    failing = None;
                    let count = applied.as_ref().map_or(0, |r| r.vips.len());
                    let message = match applied.as_ref().and_then(|r| r.settings.as_ref()) {
                        Some(_) => format!("keepalived configuration applied: {count} addresses"),
                        None => "keepalived stopped: VRRP is off".to_owned(),
                    };
                    tracing::info!("{message}");
                    self.events
                        .record(NewEvent::new(EventKind::System, message));
                }
                Some(Err(error)) if failing.as_ref() != Some(&error) => {
                    tracing::error!(%error, "Cannot apply keepalived's configuration");
                    self.events.record(NewEvent::new(
                        EventKind::System,
                        format!("Cannot apply keepalived's configuration: {error}"),
                    ));
                    failing = Some(error);
                }
                Some(Err(_)) => {}
            }
        }
    }

    /// Keep the health file fresh while `liveness` holds, follow
    /// keepalived's FIFO, and hand keepalived its configuration when the
    /// layout says where, until `stop`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        liveness: health::Liveness,
        control: crate::control::ControlHandle,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let applier = self.layout.clone().map(|layout| {
            tokio::spawn(Arc::clone(self).keep_applied(layout, control, stop.clone()))
        });
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
        // Made before poolgate reports ready (keepalived starts after it):
        // a FIFO keepalived had to make itself would be root's.
        if self.settings.borrow().is_some()
            && let Err(error) = state::make_fifo(&self.paths.notify_fifo)
        {
            tracing::error!(fifo = %self.paths.notify_fifo.display(), %error, "Cannot make keepalived's notify FIFO");
        }
        let reader = tokio::spawn(state::follow(
            self.paths.notify_fifo.clone(),
            enabled.clone(),
            self.states.clone(),
            self.events.clone(),
            stop.clone(),
        ));
        let writer = tokio::spawn(health::run(
            self.paths.health_file.clone(),
            liveness,
            enabled,
            self.giving_up.subscribe(),
            stop,
        ));
        tokio::spawn(async move {
            let _ = writer.await;
            let _ = reader.await;
            if let Some(applier) = applier {
                let _ = applier.await;
            }
        })
    }
}

/// What the VRRP settings require of a config change: every virtual
/// service address is of a family the settings have a source and peer for
/// (VRRPv3 carries one family per instance). A 422 naming the field.
pub(crate) fn config_check(
    settings: watch::Receiver<Option<VrrpSettings>>,
) -> impl Fn(&Config) -> Vec<crate::config::FieldError> + Send + Sync + 'static {
    move |config| {
        let Some(settings) = settings.borrow().clone() else {
            return Vec::new();
        };
        let root = crate::config::path::FieldPath::root();
        config
            .virtual_services
            .iter()
            .enumerate()
            .filter(|(_, vs)| addresses::desired::is_candidate(vs.address))
            .filter_map(|(i, vs)| {
                let (paired, family) = match vs.address {
                    std::net::IpAddr::V4(_) => (settings.source_v4.is_some(), "v4"),
                    std::net::IpAddr::V6(_) => (settings.source_v6.is_some(), "v6"),
                };
                (!paired).then(|| crate::config::FieldError {
                    path: root.item("virtual_service", i).key("address"),
                    message: format!(
                        "this appliance's VRRP has no {family} source and peer to move {} with; set source_{family} and peer_{family} in PUT /api/v1/ha/vrrp",
                        vs.address
                    ),
                })
            })
            .collect()
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
