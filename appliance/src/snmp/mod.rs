//! SNMP: net-snmp's snmpd does the protocol and its security (v2c
//! communities, v3 users with authPriv, trap sinks); poolgate is an AgentX
//! subagent (RFC 2741) of it, serving POOLGATE-MIB (`mib/POOLGATE-MIB.txt`,
//! under the placeholder enterprise number 32473) and sending its
//! notifications through it. Design note: `docs/decisions/1101-snmp-agentx.md`.
//!
//! * [`mib`]: the MIB's values, built from the status document, and the
//!   get/getnext lookups;
//! * [`agentx`]: the session with snmpd (open, register, answers, notify);
//! * [`settings`]: the v2c community, v3 users and trap sinks (settings
//!   store, `GET|PUT|DELETE /api/v1/system/snmp`) and the snmpd.conf they
//!   render to; [`apply`]: its hand-over to snmpd by a root step
//!   (`poolgate system apply-snmp`).
//!
//! [`serve`] keeps one session open to the master agent's socket
//! (reconnecting with a backoff from 1 s doubling to 30 s while snmpd is
//! away), answers its requests from the pool view of that moment, and
//! turns events of the event table into notifications ([`notification`]):
//! member down and up, drained and drain overdue, HA role changes, and a
//! daily licence-expiry warning from 14 days before the end. Events are
//! read after the last id seen, as remote syslog reads them; while no
//! session is open they wait (at most one batch a poll is sent).

pub(crate) mod agentx;
pub(crate) mod apply;
pub(crate) mod mib;
pub(crate) mod settings;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::state::PublisherHandle;
use crate::store::{Event, Store};
use crate::web::status::StatusBody;

use mib::Value;

pub use apply::{SnmpApplyError, SnmpLayout, serve_request};
pub use settings::{SnmpSettings, SnmpUser, TrapSink, TrapVersion};

/// How often the event table is read for new events.
const POLL: Duration = Duration::from_millis(200);
const BATCH: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the licence is checked for an end within [`EXPIRY_WARNING_DAYS`].
const LICENCE_CHECK: Duration = Duration::from_secs(24 * 3600);
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;

/// `pgNotifications` numbers (the MIB's).
const MEMBER_DOWN: u32 = 1;
const MEMBER_UP: u32 = 2;
const MEMBER_DRAINED: u32 = 3;
const DRAIN_OVERDUE: u32 = 4;
const LICENCE_EXPIRING: u32 = 5;
const HA_ROLE_CHANGED: u32 = 6;

/// `pgNotifyObjects` numbers.
const NOTIFY_POOL: u32 = 1;
const NOTIFY_MEMBER: u32 = 2;
const NOTIFY_MONITOR: u32 = 3;
const NOTIFY_TEXT: u32 = 4;

/// A notification to send: its OID and its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notification {
    pub trap: Vec<u32>,
    pub objects: Vec<(Vec<u32>, Value)>,
}

fn text(n: u32, value: &str) -> (Vec<u32>, Value) {
    (mib::notify_object(n), Value::Text(value.to_owned()))
}

/// The notification an event makes, if any.
pub(crate) fn notification(event: &Event) -> Option<Notification> {
    let detail = |key: &str| event.detail.as_ref().and_then(|d| d.get(key));
    let detail_str = |key: &str| detail(key).and_then(serde_json::Value::as_str);
    let pool = event.pool.as_deref().unwrap_or_default();
    let member = event.member.as_deref().unwrap_or_default();
    let about_member = |n: u32, monitor: Option<&str>| {
        let mut objects = vec![text(NOTIFY_POOL, pool), text(NOTIFY_MEMBER, member)];
        if let Some(monitor) = monitor {
            objects.push(text(NOTIFY_MONITOR, monitor));
        }
        objects.push(text(NOTIFY_TEXT, &event.message));
        Notification {
            trap: mib::notification(n),
            objects,
        }
    };
    match event.kind.as_str() {
        "health" => {
            let trap = match detail_str("to")? {
                "down" => MEMBER_DOWN,
                "up" => MEMBER_UP,
                _ => return None,
            };
            Some(about_member(
                trap,
                Some(detail_str("monitor").unwrap_or_default()),
            ))
        }
        "drain" if detail("overdue").and_then(serde_json::Value::as_bool) == Some(true) => {
            Some(about_member(DRAIN_OVERDUE, None))
        }
        "drain" if event.message.contains(" drained") => Some(about_member(MEMBER_DRAINED, None)),
        "ha" if detail_str("role").is_some() => Some(Notification {
            trap: mib::notification(HA_ROLE_CHANGED),
            objects: vec![text(NOTIFY_TEXT, &event.message)],
        }),
        _ => None,
    }
}

/// Where the subagent connects.
#[derive(Debug, Clone)]
pub struct SnmpOptions {
    /// snmpd's AgentX socket (`agentXSocket` in snmpd.conf).
    pub agentx_socket: PathBuf,
}

/// Serve POOLGATE-MIB to snmpd until `shutdown`.
pub(crate) async fn serve(
    options: SnmpOptions,
    publisher: PublisherHandle,
    store: Store,
    licensing: crate::license::Licensing,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut cursor = None;
    let mut licence_due = tokio::time::Instant::now();
    let mut reported = false;
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = agentx::Session::open(&options.agentx_socket, started) => opened,
        };
        let mut session = match opened {
            Ok(session) => session,
            Err(error) => {
                // Once per outage: snmpd is away until SNMP is set up.
                if !reported {
                    tracing::warn!(socket = %options.agentx_socket.display(), %error, "Cannot open an AgentX session with snmpd; retrying");
                    reported = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        reported = false;
        tracing::info!(socket = %options.agentx_socket.display(), "AgentX session open: serving POOLGATE-MIB");
        if cursor.is_none() {
            cursor = newest_id(&store).await;
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    session.close().await;
                    return;
                }
                pdu = session.next_pdu() => {
                    let bytes = match pdu {
                        Ok(bytes) => bytes,
                        Err(error) => break error,
                    };
                    let tree = || mib::Tree::of(&StatusBody::of(&publisher.current()));
                    if let Err(error) = session.answer(&bytes, tree).await {
                        break error;
                    }
                }
                _ = tick.tick() => {
                    let mut due = Vec::new();
                    if let Some(after) = cursor {
                        let store = store.clone();
                        if let Ok(Ok(events)) = tokio::task::spawn_blocking(move || store.events_after(after, BATCH)).await {
                            for event in events {
                                cursor = Some(event.id);
                                due.extend(notification(&event));
                            }
                        }
                    } else {
                        cursor = newest_id(&store).await;
                    }
                    if tokio::time::Instant::now() >= licence_due {
                        licence_due += LICENCE_CHECK;
                        due.extend(licence_warning(&licensing).await);
                    }
                    let mut failed = None;
                    for notification in due {
                        if let Err(error) = session.notify(&notification.trap, notification.objects).await {
                            failed = Some(error);
                            break;
                        }
                    }
                    if let Some(error) = failed {
                        break error;
                    }
                }
            }
        };
        tracing::warn!(%ended, "AgentX session with snmpd ended; reconnecting");
    }
}

async fn newest_id(store: &Store) -> Option<i64> {
    let store = store.clone();
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

/// `pgLicenceExpiring` when the licence (or evaluation) ends within
/// [`EXPIRY_WARNING_DAYS`].
async fn licence_warning(licensing: &crate::license::Licensing) -> Option<Notification> {
    let licensing = licensing.clone();
    let status = tokio::task::spawn_blocking(move || licensing.status())
        .await
        .ok()?
        .ok()?;
    let days = status.days_left?;
    (0..=EXPIRY_WARNING_DAYS)
        .contains(&days)
        .then(|| Notification {
            trap: mib::notification(LICENCE_EXPIRING),
            objects: vec![text(
                NOTIFY_TEXT,
                &format!("The licence ends in {days} day(s): {}", status.message),
            )],
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, message: &str, detail: serde_json::Value) -> Event {
        Event {
            id: 1,
            at: String::new(),
            kind: kind.into(),
            pool: Some("pool01".into()),
            member: Some("fe01".into()),
            message: message.into(),
            detail: Some(detail),
        }
    }

    #[test]
    fn events_become_the_mibs_notifications() {
        let down = event(
            "health",
            "fe-sip: up -> down",
            serde_json::json!({"monitor": "fe-sip", "to": "down"}),
        );
        let n = notification(&down).expect("a trap");
        assert_eq!(n.trap, mib::notification(MEMBER_DOWN));
        assert_eq!(
            n.objects,
            vec![
                text(NOTIFY_POOL, "pool01"),
                text(NOTIFY_MEMBER, "fe01"),
                text(NOTIFY_MONITOR, "fe-sip"),
                text(NOTIFY_TEXT, "fe-sip: up -> down"),
            ]
        );
        let drained = event(
            "drain",
            "pool01/fe01 drained: ready to take offline",
            serde_json::json!({"overdue": false}),
        );
        assert_eq!(
            notification(&drained).map(|n| n.trap),
            Some(mib::notification(MEMBER_DRAINED))
        );
        let overdue = event("drain", "x overdue", serde_json::json!({"overdue": true}));
        assert_eq!(
            notification(&overdue).map(|n| n.trap),
            Some(mib::notification(DRAIN_OVERDUE))
        );
        let role = event("ha", "now standby", serde_json::json!({"role": "standby"}));
        assert_eq!(
            notification(&role).map(|n| n.trap),
            Some(mib::notification(HA_ROLE_CHANGED))
        );
        assert!(notification(&event("admin", "drain", serde_json::json!({}))).is_none());
    }
}

/// The stored settings key of [`SnmpSettings`].
pub(crate) const SETTINGS_KEY: &str = "snmp.settings";

#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    #[error("invalid SNMP settings")]
    Invalid(Vec<crate::web::FieldProblem>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the stored SNMP settings cannot be read: {0}")]
    Stored(String),
    #[error(transparent)]
    Apply(#[from] SnmpApplyError),
}

/// What `GET /api/v1/system/snmp` shows.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SnmpView {
    /// `None`: SNMP is off. Passwords and communities show as `********`.
    pub settings: Option<SnmpSettings>,
    /// The snmpd.conf the settings render to, secrets masked.
    pub snmpd_conf: Option<String>,
    /// Whether a root step hands it to snmpd (`false`: shown only).
    pub applied_by_root_step: bool,
}

/// This appliance's SNMP settings and their hand-over to snmpd.
#[derive(Debug)]
pub struct Snmp {
    store: Store,
    events: crate::events::EventLog,
    settings: std::sync::Mutex<Option<SnmpSettings>>,
    layout: Option<SnmpLayout>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Snmp {
    pub(crate) fn load(
        store: Store,
        events: crate::events::EventLog,
        layout: Option<SnmpLayout>,
    ) -> Result<std::sync::Arc<Self>, SnmpError> {
        let settings = match store.setting(SETTINGS_KEY)? {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<SnmpSettings>(&text)
                    .map_err(|e| SnmpError::Stored(e.to_string()))?,
            ),
        };
        Ok(std::sync::Arc::new(Self {
            store,
            events,
            settings: std::sync::Mutex::new(settings),
            layout,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }))
    }

    fn current(&self) -> Option<SnmpSettings> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn view(&self) -> SnmpView {
        let settings = self.current();
        let paths = self.layout.clone().unwrap_or_default().paths();
        let snmpd_conf = settings
            .as_ref()
            .map(|s| settings::render(&s.redacted(), &paths));
        SnmpView {
            settings: settings.map(|s| s.redacted()),
            snmpd_conf,
            applied_by_root_step: self.layout.as_ref().is_some_and(|l| l.request.is_some()),
        }
    }

    /// Validate, store and hand over `settings` (`None` turns SNMP off);
    /// 422 naming the field, nothing stored, when they are invalid. The
    /// hand-over happens only with a layout. Blocking (store, root step).
    pub(crate) fn set(&self, settings: Option<SnmpSettings>, actor: &str) -> Result<(), SnmpError> {
        let message = match &settings {
            Some(new) => {
                let problems = settings::validate(new);
                if !problems.is_empty() {
                    return Err(SnmpError::Invalid(problems));
                }
                let text = serde_json::to_string(new).expect("settings serialise");
                self.store.set_setting(SETTINGS_KEY, &text)?;
                format!(
                    "SNMP settings changed by {actor}: v2c {}, {} v3 user(s), {} trap sink(s)",
                    if new.community.is_some() { "on" } else { "off" },
                    new.users.len(),
                    new.trap_sinks.len()
                )
            }
            None => {
                self.store.remove_setting(SETTINGS_KEY)?;
                format!("SNMP turned off by {actor}")
            }
        };
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings.clone();
        tracing::info!(%actor, "{message}");
        self.events.record(crate::events::NewEvent::new(
            crate::events::EventKind::System,
            message,
        ));
        if let Some(layout) = &self.layout {
            let id = self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            apply::apply(layout, &apply::ApplyRequest { id, settings })?;
        }
        Ok(())
    }
}
