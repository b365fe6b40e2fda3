//! The control task: the one owner of every change to the desired state.
//! A config PUT, an import (a PUT with TOML), the file given at start
//! (`poolgate run --config`), a member action (drain, enable, disable) and
//! a change replicated from the HA peer ([`Change::Peer`], `crate::ha`) all
//! become one [`Change`] with its [`Source`], and all take the same path, in
//! this order:
//!
//! validate → licence → version check (`If-Match`) → diff → commit → publish
//! → announce.
//!
//! A preview takes the same path as a dry run: it stops before the commit
//! and returns the diff.
//!
//! A restored backup ([`Change::Restore`], checked whole by `crate::backup`
//! first) replaces config history, admin states, users, CA bundles and
//! licences in one store transaction, then publishes the CA bundles and the
//! config as a replacement (the version may move back); it is refused on a
//! standby and while an admin listener move awaits confirmation, as a
//! config change is.
//!
//! Invariants:
//! * Requests reach the task over one mpsc channel, each with a oneshot for
//!   its reply, so changes are applied one at a time in one order: the order
//!   of the config versions and of the events in the store, of the
//!   generations the publisher builds, and of the [`Committed`] stream.
//! * A change is durable (committed with its event in one SQLite
//!   transaction) before it is published, and published before its reply is
//!   sent: whoever got a reply sees the change in `GET /api/v1/status`.
//! * The stored TOML is parsed once, when the task is built at start;
//!   afterwards the committed config is held in memory ([`Desired`]), which
//!   is what `GET /api/v1/config` and the export serve.
//! * Nothing else writes config versions or admin states while the task
//!   runs; the version check against the in-memory version is therefore the
//!   check against the store.
//! * A config that moves the admin listener must be confirmed by a request
//!   that reaches the new address (`pending`) within the confirm timeout
//!   (120 s by default); until then the old admin listener stays open
//!   ([`ControlHandle::admin_move`]) and other config changes are refused.
//!   Unconfirmed, the task commits the previous config again, as a change of
//!   its own ([`Source::Revert`]). The move is recorded in the store with
//!   the version that makes it and forgotten when it is confirmed or
//!   reverted, so a move still awaiting confirmation when poolgate stops is
//!   reverted at the next start ([`Controller::load`]). The move is announced on the watch
//!   before the new config is published, so the listeners never see the new
//!   address without knowing to keep the old one.
//! * One writer in an HA pair: while [`Writer`] says this appliance is the
//!   standby, changes from the API and from a file are refused
//!   ([`ControlError::Standby`]); only the peer's changes are committed,
//!   under the peer's version numbers, each newer than the one in force
//!   (an older one is a replay and refused). A peer config keeps this
//!   appliance's own `[listen]` section: listen addresses belong to the
//!   appliance. It is not checked against this appliance's licence (the
//!   active checked its own; a licence never stops traffic) nor against the
//!   host's interfaces (the VIPs are the active's until a failover).

mod controller;
pub(crate) mod pending;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, AdminState, Config, ConfigDiff, ConfigError, ConfigFile, MemberKey};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::health::ca::CaBundle;
use crate::state::{PublisherHandle, Update};
use crate::store::{Store, StoreError};
use pending::Pending;
use tokio::time::Instant;

pub(crate) use controller::{Applied, Controller};

/// Requests waiting for the task before senders wait too.
const QUEUE: usize = 64;

/// Committed changes kept for a subscriber that fell behind; one that falls
/// further behind is told how many it missed (`RecvError::Lagged`).
pub(crate) const COMMITTED_BACKLOG: usize = 256;

/// Who asked for a change: named in its event and in the stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A logged-in user or an API token's owner.
    Api { user: String },
    /// The file given to `poolgate run --config`.
    File { path: PathBuf },
    /// The control task itself, putting back config `version` because the
    /// admin listener's move to `to` was not confirmed in time.
    Revert { version: i64, to: SocketAddr },
    /// The HA peer (`crate::ha`), by its appliance id.
    Peer { appliance_id: String },
}

impl Source {
    /// Who the event log names as having acted.
    pub(crate) fn actor(&self) -> String {
        match self {
            Self::Api { user } => user.clone(),
            Self::File { .. } | Self::Revert { .. } | Self::Peer { .. } => self.to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api { user } => write!(f, "API ({user})"),
            Self::File { path } => write!(f, "file {}", path.display()),
            Self::Revert { version, to } => write!(
                f,
                "revert to version {version} (admin listener move to {to} not confirmed)"
            ),
            Self::Peer { appliance_id } => write!(f, "HA peer {appliance_id}"),
        }
    }
}

/// A whole config as it arrives, validated by the task.
#[derive(Debug, Clone)]
pub(crate) enum ConfigInput {
    /// A JSON body (`PUT /api/v1/config`, the UI's editor).
    Json(Vec<u8>),
    /// TOML text: an import, an exported file.
    Toml(String),
    /// Already validated, such as the file given at start, which is checked
    /// before the store is even opened.
    Validated(Box<Config>),
}

/// One change to the desired state.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Replace the whole desired config. With `if_match`, only if the
    /// committed version is still that one.
    Config {
        input: ConfigInput,
        if_match: Option<i64>,
    },
    /// Set one member's admin state.
    Member {
        member: MemberKey,
        state: AdminState,
    },
    /// A change the HA peer committed (only with [`Source::Peer`]).
    Peer(PeerChange),
    /// Upload or replace a CA bundle (already checked by `health::ca`).
    PutCaBundle(Box<CaBundle>),
    /// Delete a CA bundle no monitor uses.
    DeleteCaBundle { name: String },
    /// Replace config history, admin states, users, CA bundles and
    /// licences with a checked backup (`crate::backup`).
    Restore(Box<crate::backup::Plan>),
}

/// What the HA peer committed, as this appliance applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerChange {
    /// A config version under the peer's number, as the peer's TOML. With
    /// `rebase`, this appliance's versions after it are dropped first (the
    /// peer's history won after a split).
    Config {
        version: i64,
        toml: String,
        /// Where the peer's version came from (`API (admin)`).
        origin: String,
        rebase: Option<i64>,
    },
    /// One member's admin state, with the time the peer set it.
    Admin {
        member: MemberKey,
        state: AdminState,
        changed_at: String,
    },
}

/// Whether this appliance commits changes of its own: what the HA role
/// (`crate::ha`) tells the task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Writer {
    /// Alone, or the active of a pair.
    #[default]
    Own,
    /// The standby of a pair: changes are made on the active, at `active`
    /// (its admin address) if known.
    Standby { active: Option<String> },
}
/// The committed desired state, as the task holds it: the config and its
/// version, and every member's admin state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desired {
    /// 0 while nothing is stored (a fresh appliance runs the bootstrap config).
    pub version: i64,
    pub config: Arc<Config>,
    pub admin: BTreeMap<MemberKey, AdminState>,
}

impl Desired {
    /// Whether a config has been committed (rather than the bootstrap one).
    pub(crate) fn stored(&self) -> bool {
        self.version > 0
    }

    /// The config's file form with each member's `state` set to its current
    /// admin state: what `GET /api/v1/config` shows and an export carries.
    pub(crate) fn file(&self) -> ConfigFile {
        let mut file = self.config.source().clone();
        config::set_admin_states(&mut file, &self.admin);
        file
    }

    /// [`Desired::file`] as TOML, the text `poolgate export` prints.
    pub(crate) fn toml(&self) -> String {
        config::file_to_toml(&self.file())
    }
}

/// What a committed config change did.
#[derive(Debug, Clone)]
pub(crate) struct ConfigOutcome {
    /// The version now in force.
    pub version: i64,
    pub diff: ConfigDiff,
    /// The generation of the pool view that includes the change.
    pub generation: u64,
    /// When the change moved the admin listener: the move's deadline.
    pub confirm_by: Option<time::OffsetDateTime>,
}

/// A move of the admin listener that awaits its confirmation: both
/// addresses are served meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdminMove {
    /// The address kept open until the move is confirmed.
    pub from: SocketAddr,
    /// The address the config now names, where the confirmation must arrive.
    pub to: SocketAddr,
    pub confirm_by: time::OffsetDateTime,
}

/// How a confirmation arrived: on the admin listener opened for
/// `listened_on` (as the config names it), at the local address `reached`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arrival {
    pub listened_on: SocketAddr,
    pub reached: SocketAddr,
}

impl Arrival {
    /// Whether the request proves that `to` answers: it came through the
    /// listener opened for `to`, or (while a wildcard and a specific
    /// address on one port cannot both listen, so the old listener still
    /// serves) it reached `to`'s address and port.
    pub(crate) fn reaches(&self, to: SocketAddr) -> bool {
        let same_address = to.ip().is_unspecified() || to.ip() == self.reached.ip();
        self.listened_on == to
            || (to.port() != 0 && to.port() == self.reached.port() && same_address)
    }
}

/// The store key of the admin move awaiting confirmation ([`AwaitingMove`]).
const AWAITING_MOVE_KEY: &str = "control.admin_move";

/// What the store keeps of an admin move awaiting confirmation: enough to
/// revert it after a restart.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct AwaitingMove {
    /// The version in force before the move (0: the bootstrap config).
    revert_to: i64,
    from: SocketAddr,
    to: SocketAddr,
}

/// `config` with each member's admin state as it is now: what a revert
/// commits, so a drain begun during the move is not undone by it. (States
/// are valid values, so it validates as `config` did.)
fn with_admin_states(config: &Config, admin: &BTreeMap<MemberKey, AdminState>) -> Config {
    let mut file = config.source().clone();
    config::set_admin_states(&mut file, admin);
    config::validate(&file).unwrap_or_else(|_| config.clone())
}

/// What the task keeps to revert an unconfirmed admin move.
#[derive(Debug, Clone)]
struct Revert {
    config: Arc<Config>,
    version: i64,
    admin_move: AdminMove,
}

/// What a confirmation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Confirmed {
    pub admin_move: AdminMove,
}

/// What a member action did.
#[derive(Debug, Clone)]
pub(crate) struct MemberOutcome {
    pub previous: AdminState,
    pub state: AdminState,
    pub generation: u64,
}

/// What a config would change, for a preview. Nothing was written.
#[derive(Debug, Clone)]
pub(crate) struct Preview {
    /// The desired state the diff is from.
    pub current: Arc<Desired>,
    pub config: Config,
    pub diff: ConfigDiff,
    /// Why the licence would refuse it, if it would.
    pub licence_problem: Option<String>,
}

/// What a committed change was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommittedChange {
    Config {
        config: Arc<Config>,
    },
    Member {
        member: MemberKey,
        previous: AdminState,
        state: AdminState,
    },
    /// A CA bundle was uploaded or replaced (`bundle` is the new one), or
    /// deleted (`None`): what a follower needs to hold the same bundles.
    CaBundle {
        name: String,
        bundle: Option<Arc<CaBundle>>,
    },
}

/// One committed change, in commit order: what the UI's history, and the HA
/// peer, follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Counts the changes this task committed, from 1, without gaps.
    pub seq: u64,
    /// The config version in force after the change.
    pub version: i64,
    pub source: Source,
    pub change: CommittedChange,
    /// One sentence per change (`ConfigDiff::summary` for configs).
    pub summary: Vec<String>,
    /// The generation of the pool view that first includes it.
    pub generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The config does not parse or validate; the problems name the fields.
    #[error(transparent)]
    Invalid(ConfigError),
    /// The licence does not allow the change (traffic is never affected).
    #[error("{0}")]
    Licence(String),
    /// `If-Match` named a version other than the committed one.
    #[error("the configuration changed since version {expected} (now version {current})")]
    VersionMismatch { expected: i64, current: i64 },
    #[error("pool {pool:?} has no member {member:?}")]
    UnknownMember { pool: String, member: String },
    /// The committed config no longer validates (read at start).
    #[error("stored config version {version} no longer validates: {source}")]
    StoredConfig {
        version: i64,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A move of the admin listener awaits confirmation: config changes
    /// wait until it is confirmed or reverted.
    #[error(
        "the admin listener's move to {to} awaits confirmation (until {confirm_by}); confirm it from the new address or wait for the revert"
    )]
    AwaitingConfirmation { to: SocketAddr, confirm_by: String },
    /// A confirmation with no move awaiting one (or after its deadline).
    #[error("no admin listener move awaits confirmation")]
    NothingToConfirm,
    /// A confirmation that did not arrive on the new admin address.
    #[error("confirm the move on the new admin address {to}")]
    ConfirmElsewhere { to: SocketAddr },
    /// This appliance is the standby of an HA pair: changes are made on the
    /// active.
    #[error("this appliance is standby; make changes on the active at {}", active.as_deref().unwrap_or("its address (the peer is not connected)"))]
    Standby { active: Option<String> },
    /// A peer's version not newer than the one in force: a replay.
    #[error(
        "config version {version} is not newer than version {current} in force; replay refused"
    )]
    Replay { version: i64, current: i64 },
    /// A CA bundle that monitors still name cannot be deleted.
    #[error(
        "CA bundle {name:?} is used by monitor {}; choose another CA bundle in them first",
        monitors.join(", ")
    )]
    CaBundleInUse { name: String, monitors: Vec<String> },
    #[error("no CA bundle {0:?} is uploaded")]
    UnknownCaBundle(String),
    /// The task has stopped (shutdown), or the publisher has.
    #[error("the control task has stopped")]
    Stopped,
}

/// A request and where its reply goes.
struct Envelope {
    request: Request,
    source: Source,
    reply: oneshot::Sender<Result<Reply, ControlError>>,
}

#[derive(Debug)]
enum Request {
    Change(Change),
    /// The config path as a dry run.
    Preview(ConfigInput),
    /// Confirm the admin listener's move, from a request that arrived as
    /// `arrival` says.
    Confirm {
        arrival: Arrival,
    },
}

enum Reply {
    Config(Box<ConfigOutcome>),
    Member(MemberOutcome),
    Preview(Box<Preview>),
    Confirmed(Confirmed),
    /// A CA bundle change, with the generation that carries it.
    CaBundle(u64),
    /// A restored backup.
    Restored(ConfigOutcome),
}

/// Handle to the control task; cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    requests: mpsc::Sender<Envelope>,
    desired: watch::Receiver<Arc<Desired>>,
    committed: broadcast::Sender<Committed>,
    admin_move: watch::Receiver<Option<AdminMove>>,
    confirm_timeout: Duration,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("request", &self.request)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ControlHandle {
    /// The committed desired state, as last published.
    pub(crate) fn desired(&self) -> Arc<Desired> {
        Arc::clone(&self.desired.borrow())
    }

    /// The stream of committed changes from now on, in commit order.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The admin listener's move awaiting confirmation, if any: set before
    /// the config naming the new address is published, cleared once it is
    /// confirmed or reverted.
    pub(crate) fn admin_move(&self) -> watch::Receiver<Option<AdminMove>> {
        self.admin_move.clone()
    }

    /// How long a move of the admin listener has to be confirmed.
    pub(crate) fn confirm_timeout(&self) -> Duration {
        self.confirm_timeout
    }

    /// Confirm the admin listener's move from a request that arrived as
    /// `arrival` says.
    pub(crate) async fn confirm(
        &self,
        arrival: Arrival,
        source: Source,
    ) -> Result<Confirmed, ControlError> {
        match self.request(Request::Confirm { arrival }, source).await? {
            Reply::Confirmed(confirmed) => Ok(confirmed),
            Reply::Config(_)
            | Reply::Member(_)
            | Reply::Preview(_)
            | Reply::CaBundle(_)
            | Reply::Restored(_) => {
                unreachable!("a confirmation has a confirmation reply")
            }
        }
    }

    /// Replace the desired config; returns once the change is published.
    pub(crate) async fn set_config(
        &self,
        input: ConfigInput,
        if_match: Option<i64>,
        source: Source,
    ) -> Result<ConfigOutcome, ControlError> {
        match self
            .request(Request::Change(Change::Config { input, if_match }), source)
            .await?
        {
            Reply::Config(outcome) => Ok(*outcome),
            Reply::Member(_)
            | Reply::Preview(_)
            | Reply::Confirmed(_)
            | Reply::CaBundle(_)
            | Reply::Restored(_) => {
                unreachable!("a config change has a config reply")
            }
        }
    }

    /// Set a member's admin state; returns once the change is published.
    pub(crate) async fn set_admin_state(
        &self,
        member: MemberKey,
        state: AdminState,
        source: Source,
    ) -> Result<MemberOutcome, ControlError> {
        match self
            .request(Request::Change(Change::Member { member, state }), source)
            .await?
        {
            Reply::Member(outcome) => Ok(outcome),
            Reply::Config(_)
            | Reply::Preview(_)
            | Reply::Confirmed(_)
            | Reply::CaBundle(_)
            | Reply::Restored(_) => {
                unreachable!("a member action has a member reply")
            }
        }
    }

    /// Apply a change the HA peer committed; returns once it is published.
    /// The version in force afterwards.
    pub(crate) async fn peer(
        &self,
        change: PeerChange,
        source: Source,
    ) -> Result<i64, ControlError> {
        match self
            .request(Request::Change(Change::Peer(change)), source)
            .await?
        {
            Reply::Config(outcome) => Ok(outcome.version),
            Reply::Member(_) | Reply::CaBundle(_) => Ok(self.desired().version),
            Reply::Preview(_) | Reply::Confirmed(_) | Reply::Restored(_) => {
                unreachable!("a peer change has a config or member reply")
            }
        }
    }

    /// What `input` would change, writing nothing: the config path as a dry
    /// run, in line with the changes before and after it.
    pub(crate) async fn preview(
        &self,
        input: ConfigInput,
        source: Source,
    ) -> Result<Preview, ControlError> {
        match self.request(Request::Preview(input), source).await? {
            Reply::Preview(preview) => Ok(*preview),
            Reply::Config(_)
            | Reply::Member(_)
            | Reply::Confirmed(_)
            | Reply::CaBundle(_)
            | Reply::Restored(_) => {
                unreachable!("a dry run has a preview reply")
            }
        }
    }

    /// Upload or replace a CA bundle; returns the generation that carries
    /// it (monitors that use it verify with it from their next probe).
    pub(crate) async fn put_ca_bundle(
        &self,
        bundle: CaBundle,
        source: Source,
    ) -> Result<u64, ControlError> {
        self.ca_bundle(Change::PutCaBundle(Box::new(bundle)), source)
            .await
    }

    /// Delete a CA bundle that no monitor names.
    pub(crate) async fn delete_ca_bundle(
        &self,
        name: String,
        source: Source,
    ) -> Result<u64, ControlError> {
        self.ca_bundle(Change::DeleteCaBundle { name }, source)
            .await
    }

    async fn ca_bundle(&self, change: Change, source: Source) -> Result<u64, ControlError> {
        match self.request(Request::Change(change), source).await? {
            Reply::CaBundle(generation) => Ok(generation),
            Reply::Config(_)
            | Reply::Member(_)
            | Reply::Preview(_)
            | Reply::Confirmed(_)
            | Reply::Restored(_) => {
                unreachable!("a CA bundle change has a CA bundle reply")
            }
        }
    }

    /// Restore a checked backup: the store replaces what it holds in one
    /// transaction, then the restored config and CA bundles are published.
    pub(crate) async fn restore(
        &self,
        plan: crate::backup::Plan,
        source: Source,
    ) -> Result<ConfigOutcome, ControlError> {
        match self
            .request(Request::Change(Change::Restore(Box::new(plan))), source)
            .await?
        {
            Reply::Restored(outcome) => Ok(outcome),
            Reply::Config(_)
            | Reply::Member(_)
            | Reply::Preview(_)
            | Reply::Confirmed(_)
            | Reply::CaBundle(_) => {
                unreachable!("a restore has a restore reply")
            }
        }
    }

    async fn request(&self, request: Request, source: Source) -> Result<Reply, ControlError> {
        let (reply, replied) = oneshot::channel();
        let envelope = Envelope {
            request,
            source,
            reply,
        };
        self.requests
            .send(envelope)
            .await
            .map_err(|_| ControlError::Stopped)?;
        replied.await.map_err(|_| ControlError::Stopped)?
    }
}

impl Controller {
    /// Start the task. It publishes through `publisher`, whose inputs must
    /// have been built from [`Controller::inputs`], and stops when
    /// `shutdown` is cancelled or every handle is dropped. A move of the
    /// admin listener must be confirmed within `confirm_timeout`; its
    /// confirmation goes to `events`.
    pub(crate) fn spawn(
        self,
        publisher: PublisherHandle,
        events: EventLog,
        shutdown: CancellationToken,
        confirm_timeout: Duration,
    ) -> (ControlHandle, tokio::task::JoinHandle<()>) {
        let (requests_tx, requests) = mpsc::channel(QUEUE);
        let (desired_tx, desired) = watch::channel(Arc::clone(self.desired()));
        let (committed, _) = broadcast::channel(COMMITTED_BACKLOG);
        let (admin_move_tx, admin_move) = watch::channel(None);
        let handle = ControlHandle {
            requests: requests_tx,
            desired,
            committed: committed.clone(),
            admin_move,
            confirm_timeout,
        };
        let outputs = Outputs {
            publisher,
            desired: desired_tx,
            committed,
            admin_move: admin_move_tx,
            events,
        };
        let task = tokio::spawn(run(self, requests, outputs, confirm_timeout, shutdown));
        (handle, task)
    }
}

/// Where the task's results go.
struct Outputs {
    publisher: PublisherHandle,
    desired: watch::Sender<Arc<Desired>>,
    committed: broadcast::Sender<Committed>,
    admin_move: watch::Sender<Option<AdminMove>>,
    /// What is not committed with an event of its own (a confirmation).
    events: EventLog,
}

async fn run(
    mut controller: Controller,
    mut requests: mpsc::Receiver<Envelope>,
    outputs: Outputs,
    confirm_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut pending: Pending<Revert, Instant> = Pending::default();
    loop {
        let deadline = pending.deadline();
        let envelope = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(revert) = pending.expire(Instant::now()) {
                    match revert_move(controller, revert, &outputs).await {
                        Some(back) => controller = back,
                        None => return,
                    }
                }
                continue;
            }
            envelope = requests.recv() => match envelope {
                Some(envelope) => envelope,
                None => break,
            },
        };
        let Envelope {
            request,
            source,
            reply,
        } = envelope;
        let request = match request {
            Request::Confirm { arrival } => {
                let store = controller.store().clone();
                let _ = reply.send(confirm(&mut pending, arrival, &source, &outputs, store).await);
                continue;
            }
            Request::Change(Change::Config { .. } | Change::Restore(_))
                if pending.revert().is_some() =>
            {
                let admin_move = pending.revert().map(|revert| revert.admin_move);
                let _ = reply.send(Err(awaiting(admin_move)));
                continue;
            }
            request => request,
        };
        let previous = Arc::clone(controller.desired());
        // The store and the licence are synchronous: off the async threads,
        // and the controller comes back with the result.
        let announced = source.clone();
        let step = tokio::task::spawn_blocking(move || {
            let step = match request {
                Request::Change(change) => controller.apply(change, &source).map(Step::Applied),
                Request::Preview(input) => controller
                    .preview(input)
                    .map(|preview| Step::Preview(Box::new(preview))),
                Request::Confirm { .. } => unreachable!("answered above"),
            };
            (controller, step)
        })
        .await;
        let step = match step {
            Ok((back, step)) => {
                controller = back;
                step
            }
            Err(error) => {
                tracing::error!(%error, "Control task failed; changes are refused until a restart");
                let _ = reply.send(Err(ControlError::Stopped));
                return;
            }
        };
        let result = match step {
            Ok(Step::Preview(preview)) => Ok(Reply::Preview(preview)),
            Ok(Step::Applied(applied)) => {
                let admin_move = moved(&previous, &applied, confirm_timeout);
                if let Some(admin_move) = admin_move {
                    tracing::info!(from = %admin_move.from, to = %admin_move.to, confirm_by = %crate::clock::rfc3339(admin_move.confirm_by), "Admin listener moves; confirm it from the new address");
                    let revert = Revert {
                        config: Arc::clone(&previous.config),
                        version: previous.version,
                        admin_move,
                    };
                    pending
                        .start(revert, Instant::now() + confirm_timeout)
                        .expect("config changes are refused while a move is pending");
                }
                // Before the new config is published, so the listeners
                // keep the old admin address open from the first moment;
                // from what awaits confirmation, so a member action during
                // a move leaves it as it is.
                let awaiting = pending.revert().map(|revert| revert.admin_move);
                outputs.admin_move.send_if_modified(|current| {
                    let changed = *current != awaiting;
                    *current = awaiting;
                    changed
                });
                publish(&controller, applied, announced, &outputs, admin_move).await
            }
            Err(error) => Err(error),
        };
        let _ = reply.send(result);
    }
}

fn awaiting(admin_move: Option<AdminMove>) -> ControlError {
    match admin_move {
        Some(admin_move) => ControlError::AwaitingConfirmation {
            to: admin_move.to,
            confirm_by: crate::clock::rfc3339(admin_move.confirm_by),
        },
        None => ControlError::NothingToConfirm,
    }
}

/// The move of the admin listener a committed config makes, if any.
fn moved(previous: &Desired, applied: &Applied, timeout: Duration) -> Option<AdminMove> {
    let Applied::Config { config, .. } = applied else {
        return None;
    };
    admin_move(&previous.config, config, timeout)
}

/// The move of the admin listener going from `previous` to `next` makes,
/// confirmed within `timeout` from now; what a commit starts and a preview
/// announces.
pub(crate) fn admin_move(previous: &Config, next: &Config, timeout: Duration) -> Option<AdminMove> {
    let (from, to) = (previous.listen.admin, next.listen.admin);
    (from != to).then(|| AdminMove {
        from,
        to,
        confirm_by: time::OffsetDateTime::now_utc() + timeout,
    })
}

/// Take a confirmation that arrived on the listener opened for `on`. The
/// move's record leaves the store first: a move confirmed is never
/// reverted by a restart.
async fn confirm(
    pending: &mut Pending<Revert, Instant>,
    arrival: Arrival,
    source: &Source,
    outputs: &Outputs,
    store: Store,
) -> Result<Reply, ControlError> {
    let Some(revert) = pending.revert() else {
        return Err(ControlError::NothingToConfirm);
    };
    let to = revert.admin_move.to;
    if !arrival.reaches(to) {
        return Err(ControlError::ConfirmElsewhere { to });
    }
    if pending
        .deadline()
        .is_none_or(|deadline| Instant::now() >= deadline)
    {
        return Err(ControlError::NothingToConfirm);
    }
    tokio::task::spawn_blocking(move || store.remove_setting(AWAITING_MOVE_KEY))
        .await
        .map_err(|_| ControlError::Stopped)??;
    let revert = pending
        .confirm(Instant::now())
        .map_err(|_| ControlError::NothingToConfirm)?;
    outputs.admin_move.send_replace(None);
    let moved = &revert.admin_move;
    tracing::info!(from = %moved.from, to = %to, by = %source, "Admin listener move confirmed");
    outputs.events.record(
        NewEvent::new(
            EventKind::System,
            format!("Admin listener move to {to} confirmed; {} closes", moved.from),
        )
        .detail(serde_json::json!({"by": source.actor(), "admin": to.to_string(), "closed": moved.from.to_string()})),
    );
    Ok(Reply::Confirmed(Confirmed {
        admin_move: revert.admin_move,
    }))
}

/// Commit the config from before an unconfirmed admin move again, through
/// the same path as any change. `None` if the task must stop.
async fn revert_move(
    controller: Controller,
    revert: Revert,
    outputs: &Outputs,
) -> Option<Controller> {
    let Revert {
        config,
        version,
        admin_move,
    } = revert;
    let source = Source::Revert {
        version,
        to: admin_move.to,
    };
    let config = with_admin_states(&config, &controller.desired().admin);
    let change = Change::Config {
        input: ConfigInput::Validated(Box::new(config)),
        if_match: None,
    };
    let announced = source.clone();
    let (controller, applied) = tokio::task::spawn_blocking(move || {
        let mut controller = controller;
        let applied = controller.apply(change, &source);
        (controller, applied)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "Control task failed; changes are refused until a restart");
    })
    .ok()?;
    match applied {
        Ok(applied) => {
            tracing::warn!(to = %admin_move.to, back = %admin_move.from, version, "Admin listener move not confirmed in time; previous config committed again");
            if publish(&controller, applied, announced, outputs, None)
                .await
                .is_err()
            {
                return None;
            }
            // After the old config is published: the old address is wanted
            // by the config again before it stops being kept.
            outputs.admin_move.send_replace(None);
        }
        // Both addresses stay open: the operator still reaches the
        // appliance, and the next committed config settles it.
        Err(error) => {
            tracing::error!(%error, to = %admin_move.to, "Cannot revert the unconfirmed admin listener move; both addresses stay open");
        }
    }
    Some(controller)
}

enum Step {
    Preview(Box<Preview>),
    Applied(Applied),
}

/// Publish what was committed, then make it visible as the desired state
/// and announce it; a file that matched goes straight back.
async fn publish(
    controller: &Controller,
    applied: Applied,
    source: Source,
    outputs: &Outputs,
    admin_move: Option<AdminMove>,
) -> Result<Reply, ControlError> {
    let Outputs {
        publisher,
        desired,
        committed,
        ..
    } = outputs;
    let confirm_by = admin_move.map(|admin_move| admin_move.confirm_by);
    let version = controller.desired().version;
    type Finish = Box<dyn FnOnce(u64) -> Reply + Send>;
    let (update, change, summary, finish): (Update, CommittedChange, Vec<String>, Finish) =
        match applied {
            Applied::Unchanged => {
                return Ok(Reply::Config(Box::new(ConfigOutcome {
                    version,
                    diff: ConfigDiff::default(),
                    generation: publisher.current().generation,
                    confirm_by: None,
                })));
            }
            Applied::Config {
                config,
                diff,
                replace,
            } => (
                if replace {
                    Update::Replace {
                        config: Arc::clone(&config),
                        version,
                        diff: ConfigDiff::clone(&diff),
                    }
                } else {
                    Update::Config {
                        config: Arc::clone(&config),
                        version,
                        diff: ConfigDiff::clone(&diff),
                    }
                },
                CommittedChange::Config { config },
                diff.summary(),
                Box::new(move |generation| {
                    Reply::Config(Box::new(ConfigOutcome {
                        version,
                        diff: *diff,
                        generation,
                        confirm_by,
                    }))
                }),
            ),
            Applied::Member {
                member,
                previous,
                state,
            } => (
                Update::AdminState {
                    member: member.clone(),
                    state,
                },
                CommittedChange::Member {
                    member: member.clone(),
                    previous,
                    state,
                },
                vec![format!(
                    "Member {}/{} becomes {} (was {})",
                    member.0,
                    member.1,
                    state.as_str(),
                    previous.as_str()
                )],
                Box::new(move |generation| {
                    Reply::Member(MemberOutcome {
                        previous,
                        state,
                        generation,
                    })
                }),
            ),
            Applied::CaBundle {
                name,
                removed,
                replaced,
                bundles,
            } => (
                Update::CaBundles(Arc::clone(&bundles)),
                CommittedChange::CaBundle {
                    name: name.clone(),
                    bundle: if removed {
                        None
                    } else {
                        bundles.get(&name).cloned()
                    },
                },
                vec![format!(
                    "CA bundle {name} {}",
                    match (removed, replaced) {
                        (true, _) => "deleted",
                        (false, true) => "replaced",
                        (false, false) => "uploaded",
                    }
                )],
                Box::new(Reply::CaBundle),
            ),
            Applied::Restored {
                config,
                diff,
                bundles,
            } => {
                // The bundles first: the restored config may name them.
                publisher
                    .apply(Update::CaBundles(bundles))
                    .await
                    .ok_or(ControlError::Stopped)?;
                let mut summary = vec![format!("Restored from a backup: config version {version}")];
                summary.extend(diff.summary());
                (
                    Update::Replace {
                        config: Arc::clone(&config),
                        version,
                        diff: ConfigDiff::clone(&diff),
                    },
                    CommittedChange::Config { config },
                    summary,
                    Box::new(move |generation| {
                        Reply::Restored(ConfigOutcome {
                            version,
                            diff: *diff,
                            generation,
                            confirm_by: None,
                        })
                    }),
                )
            }
        };
    // The change is durable already; a publisher that stopped means shutdown.
    let generation = publisher.apply(update).await.ok_or(ControlError::Stopped)?;
    desired.send_replace(Arc::clone(controller.desired()));
    // No subscriber is no error: the event log has the change anyway.
    let _ = committed.send(Committed {
        seq: controller.seq(),
        version,
        source,
        change,
        summary,
        generation,
    });
    Ok(finish(generation))
}
