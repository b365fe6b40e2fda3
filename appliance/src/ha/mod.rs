//! The HA pair, pairing and config sync: two appliances, one writer.
//!
//! Owns the pair record (peer, pinned certificate, role, last synced
//! version, changes not applied after a split; the `ha.pair` setting), the
//! one-time pairing code, the sync listener and the link to the peer
//! (`link`), and the role this appliance plays, which it hands to the
//! control task as [`Writer`].
//!
//! * **Pairing**: `POST /api/v1/ha/pairing-code` on A gives a code (10
//!   minutes, single use, three wrong tries burn it; A keeps only a key
//!   derived from it, in memory). `POST /api/v1/ha/join` on B dials A's sync
//!   listener with B's sync certificate, sends a proof (HMAC over both
//!   certificates' fingerprints keyed by the code, `protocol::proof`), and
//!   checks A's proof back. Then each pins the other's certificate (`pin`):
//!   every later connection is mutual TLS that accepts exactly that one.
//!   A is active, B standby.
//! * **Sync**: the joiner dials, whatever the roles; on each link both send
//!   a `hello`; the active then sends the versions the standby lacks (or,
//!   if the standby's history diverged, its latest version with a rebase),
//!   every member's admin state with its time, and from then on each
//!   committed change in order (`control::Committed`). The standby applies
//!   them through its own control task (`Source::Peer`), durable then
//!   published, and acknowledges each version (`synced`).
//! * **One writer**: [`Ha::set_role`] is the one place the role changes
//!   (from the API's failover, the split-brain rule, and keepalived's
//!   state through `keepalived`); the control task refuses changes of the
//!   standby's own. With VRRP settings stored, keepalived's MASTER makes
//!   this appliance active and BACKUP or FAULT standby; an active that
//!   gives up the role for another reason makes keepalived give up the
//!   addresses (`Vrrp::give_up`). A session ends when the role changes
//!   under it; the next hello sees the new roles.
//! * **Split brain**: each hello says whether its side committed config
//!   versions of its own after the last synced one, or member actions
//!   after the link was last known up (`Pair::linked_at`): `changed_alone`.
//!   `protocol::decide`: if only one did, its history wins whatever the
//!   roles are now; if both did, or both claim the same role,
//!   `protocol::wins` (higher version, then the joined side); otherwise
//!   the roles stand. The loser records each of its config versions after
//!   the last synced one, and each of those member actions, as not applied
//!   (an event each, listed in `GET /api/v1/ha`), becomes standby and
//!   takes the winner's latest version with a rebase and its admin states.
//! * Users and API token hashes are in step too: the standby takes the
//!   active's (a password the active changed later ends the user's sessions
//!   on the standby, as a change does locally).
//! * An admin-installed appliance certificate is in step (protocol 2):
//!   the standby installs the active's, and refuses an install of its own;
//!   a generated one stays each appliance's own.
//! * Each appliance keeps its own `[listen]` section, network settings,
//!   appliance id and licence (the peer's licence is shown).
//! * The link's TLS identity is its own (`identity`, made once), not the
//!   admin certificate: renewing or replacing that one keeps the pin.
//!
//! * CA bundles are in step, through the control task like configs.
//!
//! Not in step (a hook left in `link`): an admin-installed appliance
//! certificate (each keeps its own: it names that appliance's addresses).

pub(crate) mod identity;
mod keepalived;
mod link;
mod pin;
pub(crate) mod protocol;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::certs::Certificates;
use crate::control::{ControlHandle, Writer};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::license::Licensing;
use crate::store::{Store, StoreError};
pub(crate) use link::{bind, serve};
pub(crate) use protocol::Role;

/// The setting that keeps the pair.
const PAIR_KEY: &str = "ha.pair";
/// How long a pairing code is good for.
const CODE_TTL: Duration = Duration::from_secs(600);
/// Wrong proofs a code survives.
const CODE_ATTEMPTS: u32 = 3;
/// Refused sync connections are logged at WARN at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Not-applied changes kept in the pair record (the event log has all).
const NOT_APPLIED_KEPT: usize = 100;

/// The pair as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pair {
    pub peer_id: String,
    /// The peer's sync address (the joiner dials it), or where the joiner
    /// came from (on the joined side).
    pub peer_address: String,
    /// SHA-256 of the peer's certificate: the pin.
    pub fingerprint: String,
    pub role: Role,
    /// Whether this appliance joined the peer (and so dials it).
    pub joiner: bool,
    /// The last config version known to be the same on both.
    pub synced: Option<i64>,
    pub paired_at: String,
    #[serde(default)]
    pub not_applied: Vec<NotApplied>,
    /// The last time the link was known up (a ping, a change in step, the
    /// link's end): member actions of this appliance after it were made
    /// while the peer could not hear of them.
    #[serde(default)]
    pub linked_at: Option<String>,
}

/// A change committed on the losing side of a split, replaced by the
/// winner's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct NotApplied {
    /// The config version (for a member action: the one in force then).
    pub version: i64,
    pub source: String,
    pub committed_at: String,
    pub recorded_at: String,
    /// For a member action: `pool/member`.
    #[serde(default)]
    pub member: Option<String>,
    /// For a member action: the admin state it set.
    #[serde(default)]
    pub admin_state: Option<String>,
}

/// What is known of the link now.
#[derive(Debug, Clone, Default)]
struct LinkState {
    up: bool,
    sync: &'static str,
    peer_version: Option<i64>,
    peer_admin: Option<String>,
    peer_protocol: Option<u32>,
    peer_licence: Option<serde_json::Value>,
    last_error: Option<String>,
}

/// An open pairing code: only its key.
#[derive(Debug)]
struct Code {
    key: [u8; 32],
    expires: Instant,
    expires_at: time::OffsetDateTime,
    wrong: u32,
}

/// Requests to the running session.
#[derive(Debug)]
enum Command {
    /// Make `new_active` the active; the answer says whether the peer agreed.
    Failover {
        new_active: String,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Tell the peer we unpair.
    Unpair { done: oneshot::Sender<()> },
}

/// Counters of the sync link, for `/metrics` and `GET /api/v1/ha`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub refused_connections: std::sync::atomic::AtomicU64,
    pub refused_joins: std::sync::atomic::AtomicU64,
    pub refused_replays: std::sync::atomic::AtomicU64,
}

impl crate::metrics::Render for Stats {
    fn render(&self, out: &mut crate::metrics::MetricsWriter) {
        let Self {
            refused_connections,
            refused_joins,
            refused_replays,
        } = self;
        out.counter(
            "poolgate_ha_refused_connections_total",
            "Connections to the HA sync listener refused: no client certificate, one not pinned, or not a sync peer.",
            refused_connections,
        );
        out.counter(
            "poolgate_ha_refused_joins_total",
            "Pairing attempts refused: no code open, a wrong or expired code, already paired.",
            refused_joins,
        );
        out.counter(
            "poolgate_ha_refused_replays_total",
            "Config versions from the peer refused as not newer than the one in force.",
            refused_replays,
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HaError {
    #[error("{0}")]
    State(String),
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The HA side of the appliance; one per process.
#[derive(Debug)]
pub(crate) struct Ha {
    store: Store,
    events: EventLog,
    control: ControlHandle,
    /// The sync link's own key pair and certificate (what the peer pins).
    identity: Arc<rustls::sign::CertifiedKey>,
    /// The appliance certificate (admin and SIP-TLS listeners): one the
    /// admin installed on the active is installed on the standby too.
    certificates: Option<Arc<Certificates>>,
    licensing: Licensing,
    appliance_id: String,
    /// Where this appliance's sync listener is, if it has one.
    sync_listen: Option<SocketAddr>,
    pair: Mutex<Option<Pair>>,
    link: Mutex<LinkState>,
    code: Mutex<Option<Code>>,
    pins: Arc<pin::Pins>,
    writer: watch::Sender<Writer>,
    session: Mutex<Option<mpsc::Sender<Command>>>,
    /// Wakes the dialer (after a join, a failover, an unpair).
    wake: Notify,
    /// Refused connections are logged at WARN at most this often (a peer
    /// that was unpaired keeps dialling); all are counted.
    refusal_log: Mutex<crate::net::limits::LogLimit>,
    pub(crate) stats: Stats,
    /// keepalived, whose state drives the role while VRRP settings are
    /// stored (`keepalived`).
    vrrp: Option<Arc<crate::vrrp::Vrrp>>,
}

/// The pair as stored, for the start (before the HA side runs).
pub(crate) fn stored_pair(store: &Store) -> Result<Option<Pair>, StoreError> {
    Ok(store
        .setting(PAIR_KEY)?
        .and_then(|text| serde_json::from_str(&text).ok()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this appliance is to the pair: its id, its sync listener and
/// identity, and its keepalived.
#[derive(Debug)]
pub(crate) struct Local {
    pub appliance_id: String,
    pub sync_listen: Option<SocketAddr>,
    /// The sync link's own key pair and certificate (`identity`).
    pub identity: Arc<rustls::sign::CertifiedKey>,
    pub vrrp: Option<Arc<crate::vrrp::Vrrp>>,
    pub certificates: Option<Arc<Certificates>>,
}

impl Ha {
    /// The pair as stored. Blocking (the store).
    pub(crate) fn load(
        store: Store,
        events: EventLog,
        control: ControlHandle,
        licensing: Licensing,
        local: Local,
    ) -> Result<Arc<Self>, StoreError> {
        let Local {
            appliance_id,
            sync_listen,
            identity,
            vrrp,
            certificates,
        } = local;
        let pair = match store.setting(PAIR_KEY)? {
            Some(text) => match serde_json::from_str::<Pair>(&text) {
                Ok(pair) => Some(pair),
                Err(error) => {
                    tracing::error!(%error, "The stored HA pair cannot be read; running unpaired");
                    None
                }
            },
            None => None,
        };
        let pins = Arc::new(pin::Pins::default());
        pins.set(pair.as_ref().map(|p| p.fingerprint.clone()));
        let (writer, _) = watch::channel(writer_for(pair.as_ref(), None));
        Ok(Arc::new(Self {
            store,
            events,
            control,
            identity,
            certificates,
            licensing,
            appliance_id,
            sync_listen,
            pair: Mutex::new(pair),
            link: Mutex::new(LinkState {
                sync: "unknown",
                ..LinkState::default()
            }),
            code: Mutex::new(None),
            pins,
            writer,
            session: Mutex::new(None),
            wake: Notify::new(),
            refusal_log: Mutex::new(crate::net::limits::LogLimit::new(REFUSAL_LOG_EVERY)),
            stats: Stats::default(),
            vrrp,
        }))
    }

    /// Count a refused sync connection and log it (at WARN at most every
    /// [`REFUSAL_LOG_EVERY`]).
    fn refused(&self, peer: SocketAddr, why: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.stats.refused_connections.fetch_add(1, Relaxed) + 1;
        if lock(&self.refusal_log).allow(std::time::Instant::now()) {
            tracing::warn!(%peer, why, refused_total = total, "HA sync connection refused");
        } else {
            tracing::debug!(%peer, why, refused_total = total, "HA sync connection refused");
        }
    }

    /// What the control task follows.
    pub(crate) fn writer(&self) -> watch::Receiver<Writer> {
        self.writer.subscribe()
    }

    /// The role, `None` while unpaired: the one place it is read.
    pub(crate) fn role(&self) -> Option<Role> {
        lock(&self.pair).as_ref().map(|pair| pair.role)
    }

    pub(crate) fn pair(&self) -> Option<Pair> {
        lock(&self.pair).clone()
    }

    /// Change the role, with the reason for its event: the one place the
    /// role changes (the failover request, the split-brain rule, and
    /// keepalived's state through [`Ha::set_role_by_keepalived`]). An
    /// active that becomes standby for any reason but keepalived's own
    /// makes keepalived give the addresses up if it holds them, so the VIPs
    /// follow the role. Blocking (the store).
    pub(crate) fn set_role(&self, role: Role, reason: &str) -> Result<(), StoreError> {
        let was = self.role();
        self.change_role(role, reason)?;
        if was == Some(Role::Active)
            && role == Role::Standby
            && let Some(vrrp) = &self.vrrp
            && keepalived::holds_addresses(vrrp)
        {
            vrrp.give_up(vrrp.give_up_hold(), reason);
        }
        Ok(())
    }

    /// Whether keepalived's state drives the role (VRRP settings stored).
    pub(crate) fn keepalived_drives_role(&self) -> bool {
        self.vrrp
            .as_ref()
            .is_some_and(|vrrp| vrrp.settings().is_some())
    }

    /// The role keepalived's state gives (`keepalived`). Blocking.
    pub(crate) fn set_role_by_keepalived(
        &self,
        role: Role,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.change_role(role, reason)
    }

    fn change_role(&self, role: Role, reason: &str) -> Result<(), StoreError> {
        let changed = self.update(|pair| {
            let changed = pair.role != role;
            pair.role = role;
            changed
        })?;
        if changed == Some(true) {
            tracing::warn!(role = role.as_str(), reason, "HA role changed");
            self.events.record(
                NewEvent::new(
                    EventKind::Ha,
                    format!("This appliance is now {}: {reason}", role.as_str()),
                )
                .detail(serde_json::json!({"role": role.as_str(), "reason": reason})),
            );
        }
        Ok(())
    }

    /// Change the stored pair (if paired) and publish the writer; returns
    /// what `change` returned.
    fn update<T>(&self, change: impl FnOnce(&mut Pair) -> T) -> Result<Option<T>, StoreError> {
        let mut guard = lock(&self.pair);
        let Some(pair) = guard.as_mut() else {
            return Ok(None);
        };
        let mut next = pair.clone();
        let value = change(&mut next);
        if next != *pair {
            let text = serde_json::to_string(&next).expect("the pair serialises");
            self.store.set_setting(PAIR_KEY, &text)?;
            *pair = next;
        }
        let admin = lock(&self.link).peer_admin.clone();
        self.writer.send_if_modified(|writer| {
            let next = writer_for(guard.as_ref(), admin);
            let changed = *writer != next;
            *writer = next;
            changed
        });
        Ok(Some(value))
    }

    /// Store a new pair (or none), pin it and publish the writer. Blocking.
    fn replace_pair(&self, pair: Option<Pair>) -> Result<(), StoreError> {
        let mut guard = lock(&self.pair);
        match &pair {
            Some(pair) => self.store.set_setting(
                PAIR_KEY,
                &serde_json::to_string(pair).expect("the pair serialises"),
            )?,
            None => self.store.remove_setting(PAIR_KEY)?,
        }
        self.pins.set(pair.as_ref().map(|p| p.fingerprint.clone()));
        self.writer.send_replace(writer_for(pair.as_ref(), None));
        *guard = pair;
        *lock(&self.link) = LinkState {
            sync: "unknown",
            ..LinkState::default()
        };
        drop(guard);
        self.wake.notify_waiters();
        Ok(())
    }

    fn set_link(&self, change: impl FnOnce(&mut LinkState)) {
        let admin = {
            let mut link = lock(&self.link);
            change(&mut link);
            link.peer_admin.clone()
        };
        let pair = lock(&self.pair);
        self.writer.send_if_modified(|writer| {
            let next = writer_for(pair.as_ref(), admin);
            let changed = *writer != next;
            *writer = next;
            changed
        });
    }

    /// A new pairing code, shown once. Refused while paired or without a
    /// sync listener.
    pub(crate) fn new_code(&self) -> Result<(String, time::OffsetDateTime), HaError> {
        if self.sync_listen.is_none() {
            return Err(HaError::State(
                "this appliance has no HA sync listener (start it with --ha-listen)".into(),
            ));
        }
        if self.pair().is_some() {
            return Err(HaError::State(
                "this appliance is paired already; unpair first".into(),
            ));
        }
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut code = String::new();
        for i in 0..16 {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            let index = rand::random::<u8>() as usize % ALPHABET.len();
            code.push(char::from(ALPHABET[index]));
        }
        let expires_at = time::OffsetDateTime::now_utc() + CODE_TTL;
        *lock(&self.code) = Some(Code {
            key: protocol::code_key(&code),
            expires: Instant::now() + CODE_TTL,
            expires_at,
            wrong: 0,
        });
        self.pins.set_pairing_open(true);
        self.events.record(NewEvent::new(
            EventKind::Ha,
            "Pairing code created (valid 10 minutes, single use)",
        ));
        Ok((code, expires_at))
    }

    /// Check a joiner's proof against the open code: the code is used up
    /// on success, and after [`CODE_ATTEMPTS`] wrong proofs.
    fn take_code(&self, check: impl Fn(&[u8; 32]) -> bool) -> Result<[u8; 32], &'static str> {
        let mut guard = lock(&self.code);
        let Some(code) = guard.as_mut() else {
            return Err("no pairing code is open");
        };
        if Instant::now() >= code.expires {
            *guard = None;
            self.pins.set_pairing_open(false);
            return Err("the pairing code expired");
        }
        if check(&code.key) {
            let key = code.key;
            *guard = None;
            self.pins.set_pairing_open(false);
            return Ok(key);
        }
        code.wrong += 1;
        if code.wrong >= CODE_ATTEMPTS {
            *guard = None;
            self.pins.set_pairing_open(false);
        }
        Err("the pairing code is wrong")
    }

    fn code_expires_at(&self) -> Option<String> {
        lock(&self.code)
            .as_ref()
            .filter(|code| Instant::now() < code.expires)
            .map(|code| crate::clock::rfc3339(code.expires_at))
    }

    /// Join the appliance at `peer` (its sync listener) with `code`.
    pub(crate) async fn join(self: &Arc<Self>, peer: &str, code: &str) -> Result<(), HaError> {
        if self.pair().is_some() {
            return Err(HaError::State(
                "this appliance is paired already; unpair first".into(),
            ));
        }
        if self.sync_listen.is_none() {
            return Err(HaError::State(
                "this appliance has no HA sync listener (start it with --ha-listen)".into(),
            ));
        }
        let address: SocketAddr = peer.parse().map_err(|_| HaError::Field {
            field: "peer",
            message: "must be the peer's sync address as IP:port".into(),
        })?;
        if code.trim().is_empty() || code.len() > 64 {
            return Err(HaError::Field {
                field: "code",
                message: "must be the pairing code shown on the peer".into(),
            });
        }
        let joined = link::join(self, address, code).await?;
        let pair = Pair {
            peer_id: joined.peer_id.clone(),
            peer_address: address.to_string(),
            fingerprint: joined.fingerprint.clone(),
            role: Role::Standby,
            joiner: true,
            synced: None,
            paired_at: crate::clock::now_rfc3339(),
            not_applied: Vec::new(),
            linked_at: None,
        };
        self.blocking(move |ha| ha.replace_pair(Some(pair))).await?;
        self.events.record(
            NewEvent::new(
                EventKind::Ha,
                format!(
                    "Paired with {} at {address} as standby (certificate {})",
                    joined.peer_id, joined.fingerprint
                ),
            )
            .detail(serde_json::json!({"peer": joined.peer_id, "role": "standby", "reason": "joined the peer"})),
        );
        tracing::info!(peer = %joined.peer_id, %address, "Paired as standby");
        Ok(())
    }

    /// Record a pairing the peer made with us (we are the joined side).
    fn paired(&self, peer_id: &str, from: SocketAddr, fingerprint: &str) -> Result<(), StoreError> {
        let pair = Pair {
            peer_id: peer_id.to_owned(),
            peer_address: from.ip().to_string(),
            fingerprint: fingerprint.to_owned(),
            role: Role::Active,
            joiner: false,
            synced: None,
            paired_at: crate::clock::now_rfc3339(),
            not_applied: Vec::new(),
            linked_at: None,
        };
        self.replace_pair(Some(pair))?;
        self.events.record(
            NewEvent::new(
                EventKind::Ha,
                format!("Paired with {peer_id} from {from} as active (certificate {fingerprint})"),
            )
            .detail(
                serde_json::json!({"peer": peer_id, "role": "active", "reason": "the peer joined"}),
            ),
        );
        tracing::info!(peer = %peer_id, %from, "Paired as active");
        Ok(())
    }

    /// Unpair, telling the peer if the link is up.
    pub(crate) async fn unpair(self: &Arc<Self>, reason: &str) -> Result<bool, HaError> {
        let Some(pair) = self.pair() else {
            return Err(HaError::State("this appliance is not paired".into()));
        };
        let session = lock(&self.session).clone();
        let mut told = false;
        if let Some(session) = session {
            let (done, answered) = oneshot::channel();
            if session.send(Command::Unpair { done }).await.is_ok() {
                told = tokio::time::timeout(Duration::from_secs(5), answered)
                    .await
                    .is_ok();
            }
        }
        self.blocking(|ha| ha.replace_pair(None)).await?;
        self.events.record(
            NewEvent::new(
                EventKind::Ha,
                format!("Unpaired from {}: {reason}", pair.peer_id),
            )
            .detail(serde_json::json!({"peer": pair.peer_id, "role": null, "reason": reason, "peer_told": told})),
        );
        tracing::warn!(peer = %pair.peer_id, reason, told, "Unpaired");
        Ok(told)
    }

    /// Swap roles through the link; with `force`, take the active role
    /// without the peer (the link is down: the admin decides).
    pub(crate) async fn failover(self: &Arc<Self>, force: bool) -> Result<Role, HaError> {
        let Some(pair) = self.pair() else {
            return Err(HaError::State("this appliance is not paired".into()));
        };
        let session = lock(&self.session).clone();
        let new_active = match pair.role {
            Role::Active => pair.peer_id.clone(),
            Role::Standby => self.appliance_id.clone(),
        };
        let Some(session) = session else {
            if force && pair.role == Role::Standby {
                self.blocking(|ha| {
                    ha.set_role(
                        Role::Active,
                        "failover forced by the admin while the peer is unreachable",
                    )
                })
                .await?;
                return Ok(Role::Active);
            }
            return Err(HaError::State(
                "the peer is not connected; a failover needs the link (or, on the standby, {\"force\": true})".into(),
            ));
        };
        // On the active, the session gives up the role before it tells the
        // peer, so there is never a moment with two.
        let (done, answered) = oneshot::channel();
        let sent = session
            .send(Command::Failover {
                new_active: new_active.clone(),
                done,
            })
            .await
            .is_ok();
        let answer = match sent {
            true => tokio::time::timeout(Duration::from_secs(10), answered)
                .await
                .map_err(|_| "the peer did not answer".to_owned())
                .and_then(|answer| answer.map_err(|_| "the link closed".to_owned()))
                .and_then(|answer| answer),
            false => Err("the link closed".to_owned()),
        };
        match (pair.role, answer) {
            (Role::Standby, Ok(())) => {
                self.blocking(|ha| ha.set_role(Role::Active, "failover requested by the admin"))
                    .await?;
                Ok(Role::Active)
            }
            (Role::Standby, Err(why)) => Err(HaError::State(format!(
                "failover not done: {why}; this appliance stays standby"
            ))),
            (Role::Active, Ok(())) => Ok(Role::Standby),
            // The link closed first: give up the role anyway; the peer
            // takes over when it hears of it (keepalived, or the next hello).
            (Role::Active, Err(_)) => {
                self.blocking(|ha| ha.set_role(Role::Standby, "failover requested by the admin"))
                    .await?;
                Ok(Role::Standby)
            }
        }
    }

    /// Record the config versions after `base` that this appliance
    /// committed itself (not the peer's) as not applied, before the
    /// winner's history replaces them. Blocking (the store).
    fn record_not_applied(&self, base: i64) -> Result<(), StoreError> {
        let own = self.own_versions_after(base)?;
        if own.is_empty() {
            return Ok(());
        }
        let recorded_at = crate::clock::now_rfc3339();
        for version in &own {
            tracing::warn!(
                version = version.id,
                source = %version.source,
                "Config version not applied: the peer's history won after a split"
            );
            self.events.record(
                NewEvent::new(
                    EventKind::Ha,
                    format!(
                        "Config version {} ({}) not applied: the peer's history won after a split",
                        version.id, version.source
                    ),
                )
                .detail(serde_json::json!({
                    "not_applied": true,
                    "version": version.id,
                    "source": version.source,
                    "committed_at": version.created_at,
                })),
            );
        }
        self.update(|pair| {
            pair.not_applied
                .extend(own.iter().map(|version| NotApplied {
                    version: version.id,
                    source: version.source.clone(),
                    committed_at: version.created_at.clone(),
                    recorded_at: recorded_at.clone(),
                    member: None,
                    admin_state: None,
                }));
            let excess = pair.not_applied.len().saturating_sub(NOT_APPLIED_KEPT);
            pair.not_applied.drain(..excess);
        })?;
        Ok(())
    }

    /// Note that the link is up now (`Pair::linked_at`). Blocking.
    fn linked(&self) -> Result<(), StoreError> {
        let now = crate::clock::now_rfc3339();
        self.update(|pair| pair.linked_at = Some(now)).map(|_| ())
    }

    /// Member admin states set here after the link was last known up:
    /// actions the peer never heard of. Blocking (the store).
    fn own_admin_after_link(
        &self,
    ) -> Result<Vec<(crate::config::MemberKey, crate::config::AdminState, String)>, StoreError>
    {
        use time::format_description::well_known::Rfc3339;
        let parse = |text: &str| time::OffsetDateTime::parse(text, &Rfc3339).ok();
        let Some(linked) = self
            .pair()
            .and_then(|pair| pair.linked_at)
            .and_then(|at| parse(&at))
        else {
            return Ok(Vec::new());
        };
        Ok(self
            .store
            .admin_rows()?
            .into_iter()
            .filter(|(_, _, changed_at)| parse(changed_at).is_some_and(|at| at > linked))
            .collect())
    }

    /// Record member actions made here during a split as not applied: the
    /// winner's admin states replace them. Blocking (the store).
    fn record_members_not_applied(
        &self,
        actions: &[(crate::config::MemberKey, crate::config::AdminState, String)],
    ) -> Result<(), StoreError> {
        if actions.is_empty() {
            return Ok(());
        }
        let recorded_at = crate::clock::now_rfc3339();
        let version = self.control.desired().version;
        for ((pool, member), state, changed_at) in actions {
            tracing::warn!(%pool, %member, state = state.as_str(), %changed_at, "Member action not applied: the peer's history won after a split");
            self.events.record(
                NewEvent::new(
                    EventKind::Ha,
                    format!(
                        "Member action on {pool}/{member} ({}, at {changed_at}) not applied: the peer's history won after a split; the member is as the peer has it",
                        state.as_str()
                    ),
                )
                .detail(serde_json::json!({
                    "not_applied": true,
                    "pool": pool,
                    "member": member,
                    "admin_state": state.as_str(),
                    "changed_at": changed_at,
                })),
            );
        }
        self.update(|pair| {
            pair.not_applied
                .extend(
                    actions
                        .iter()
                        .map(|((pool, member), state, changed_at)| NotApplied {
                            version,
                            source: "member action".to_owned(),
                            committed_at: changed_at.clone(),
                            recorded_at: recorded_at.clone(),
                            member: Some(format!("{pool}/{member}")),
                            admin_state: Some(state.as_str().to_owned()),
                        }),
                );
            let excess = pair.not_applied.len().saturating_sub(NOT_APPLIED_KEPT);
            pair.not_applied.drain(..excess);
        })?;
        Ok(())
    }

    /// The config versions after `base` this appliance committed itself
    /// (not the peer's). Blocking (the store).
    fn own_versions_after(
        &self,
        base: i64,
    ) -> Result<Vec<crate::store::StoredVersion>, StoreError> {
        Ok(self
            .store
            .config_versions_after(base, 10_000)?
            .into_iter()
            .filter(|version| !version.source.starts_with("HA peer"))
            .collect())
    }

    /// Run `call` off the async threads.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(&Ha) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let ha = Arc::clone(self);
        tokio::task::spawn_blocking(move || call(&ha))
            .await
            .unwrap_or_else(|error| Err(StoreError::PasswordHash(format!("task failed: {error}"))))
    }

    /// `GET /api/v1/ha`.
    pub(crate) fn status(&self) -> HaStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let pair = self.pair();
        let link = lock(&self.link).clone();
        let own_fingerprint = Some(identity::fingerprint(&self.identity));
        HaStatus {
            paired: pair.is_some(),
            role: pair
                .as_ref()
                .map(|p| p.role.as_str())
                .unwrap_or("standalone"),
            appliance_id: self.appliance_id.clone(),
            fingerprint: own_fingerprint,
            sync_listen: self.sync_listen.map(|a| a.to_string()),
            config_version: self.control.desired().version,
            peer: pair.as_ref().map(|pair| PeerStatus {
                appliance_id: pair.peer_id.clone(),
                address: pair.peer_address.clone(),
                fingerprint: pair.fingerprint.clone(),
                config_version: link.peer_version,
                admin_address: link.peer_admin.clone(),
                protocol: link.peer_protocol,
                licence: link.peer_licence.clone(),
                paired_at: pair.paired_at.clone(),
                joined_it: pair.joiner,
            }),
            link: match (&pair, link.up) {
                (None, _) => "unpaired",
                (Some(_), true) => "up",
                (Some(_), false) => "down",
            },
            link_error: link.last_error.clone(),
            sync: if pair.is_some() {
                link.sync
            } else {
                "unpaired"
            },
            last_synced_version: pair.as_ref().and_then(|p| p.synced),
            not_applied: pair.map(|p| p.not_applied).unwrap_or_default(),
            pairing_code_expires_at: self.code_expires_at(),
            protocol: protocol::PROTOCOL,
            refused_connections: self.stats.refused_connections.load(Relaxed),
            refused_joins: self.stats.refused_joins.load(Relaxed),
            refused_replays: self.stats.refused_replays.load(Relaxed),
        }
    }
}

/// What the control task is told for `pair`, with the active's admin
/// address if known.
fn writer_for(pair: Option<&Pair>, active_admin: Option<String>) -> Writer {
    match pair.map(|p| p.role) {
        Some(Role::Standby) => Writer::Standby {
            active: active_admin.map(|a| format!("https://{a}")),
        },
        Some(Role::Active) | None => Writer::Own,
    }
}

/// `GET /api/v1/ha`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct HaStatus {
    pub paired: bool,
    /// `standalone`, `active` or `standby`.
    pub role: &'static str,
    pub appliance_id: String,
    /// SHA-256 of this appliance's sync certificate (what the peer pins;
    /// not the admin certificate, which is renewed and replaced).
    pub fingerprint: Option<String>,
    pub sync_listen: Option<String>,
    pub config_version: i64,
    pub peer: Option<PeerStatus>,
    /// `unpaired`, `up` or `down`.
    pub link: &'static str,
    pub link_error: Option<String>,
    /// `unpaired`, `unknown`, `catching_up`, `in_sync`, `following`.
    pub sync: &'static str,
    pub last_synced_version: Option<i64>,
    pub not_applied: Vec<NotApplied>,
    pub pairing_code_expires_at: Option<String>,
    pub protocol: u32,
    pub refused_connections: u64,
    pub refused_joins: u64,
    pub refused_replays: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct PeerStatus {
    pub appliance_id: String,
    pub address: String,
    pub fingerprint: String,
    /// The peer's config version at its last hello.
    pub config_version: Option<i64>,
    pub admin_address: Option<String>,
    pub protocol: Option<u32>,
    /// The peer's own licence status (each appliance keeps its own).
    #[schema(value_type = Option<Object>)]
    pub licence: Option<serde_json::Value>,
    pub paired_at: String,
    /// Whether this appliance joined the peer.
    pub joined_it: bool,
}
