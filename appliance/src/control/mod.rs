//! The control task: the one owner of every change to the desired state.
//! A config PUT, an import (a PUT with TOML), the file given at start
//! (`poolgate run --config`), a member action (drain, enable, disable) and,
//! later, a change replicated from the HA peer all become one [`Change`]
//! with its [`Source`], and all take the same path, in this order:
//!
//! validate → licence → version check (`If-Match`) → diff → commit → publish
//! → announce.
//!
//! A preview takes the same path as a dry run: it stops before the commit
//! and returns the diff.
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

mod controller;
pub(crate) mod pending;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, AdminState, Config, ConfigDiff, ConfigError, ConfigFile, MemberKey};
use crate::state::{PublisherHandle, Update};
use crate::store::StoreError;

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
}

impl Source {
    /// Who the event log names as having acted.
    pub(crate) fn actor(&self) -> String {
        match self {
            Self::Api { user } => user.clone(),
            Self::File { .. } => self.to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api { user } => write!(f, "API ({user})"),
            Self::File { path } => write!(f, "file {}", path.display()),
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
}

enum Reply {
    Config(Box<ConfigOutcome>),
    Member(MemberOutcome),
    Preview(Box<Preview>),
}

/// Handle to the control task; cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    requests: mpsc::Sender<Envelope>,
    desired: watch::Receiver<Arc<Desired>>,
    committed: broadcast::Sender<Committed>,
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
            Reply::Member(_) | Reply::Preview(_) => {
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
            Reply::Config(_) | Reply::Preview(_) => {
                unreachable!("a member action has a member reply")
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
            Reply::Config(_) | Reply::Member(_) => unreachable!("a dry run has a preview reply"),
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
    /// `shutdown` is cancelled or every handle is dropped.
    pub(crate) fn spawn(
        self,
        publisher: PublisherHandle,
        shutdown: CancellationToken,
    ) -> (ControlHandle, tokio::task::JoinHandle<()>) {
        let (requests_tx, requests) = mpsc::channel(QUEUE);
        let (desired_tx, desired) = watch::channel(Arc::clone(self.desired()));
        let (committed, _) = broadcast::channel(COMMITTED_BACKLOG);
        let handle = ControlHandle {
            requests: requests_tx,
            desired,
            committed: committed.clone(),
        };
        let task = tokio::spawn(run(
            self, requests, publisher, desired_tx, committed, shutdown,
        ));
        (handle, task)
    }
}

async fn run(
    mut controller: Controller,
    mut requests: mpsc::Receiver<Envelope>,
    publisher: PublisherHandle,
    desired: watch::Sender<Arc<Desired>>,
    committed: broadcast::Sender<Committed>,
    shutdown: CancellationToken,
) {
    loop {
        let envelope = tokio::select! {
            () = shutdown.cancelled() => break,
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
        // The store and the licence are synchronous: off the async threads,
        // and the controller comes back with the result.
        let announced = source.clone();
        let step = tokio::task::spawn_blocking(move || {
            let step = match request {
                Request::Change(change) => controller.apply(change, &source).map(Step::Applied),
                Request::Preview(input) => controller
                    .preview(input)
                    .map(|preview| Step::Preview(Box::new(preview))),
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
                publish(
                    &controller,
                    applied,
                    announced,
                    &publisher,
                    &desired,
                    &committed,
                )
                .await
            }
            Err(error) => Err(error),
        };
        let _ = reply.send(result);
    }
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
    publisher: &PublisherHandle,
    desired: &watch::Sender<Arc<Desired>>,
    committed: &broadcast::Sender<Committed>,
) -> Result<Reply, ControlError> {
    let version = controller.desired().version;
    type Finish = Box<dyn FnOnce(u64) -> Reply + Send>;
    let (update, change, summary, finish): (Update, CommittedChange, Vec<String>, Finish) =
        match applied {
            Applied::Unchanged => {
                return Ok(Reply::Config(Box::new(ConfigOutcome {
                    version,
                    diff: ConfigDiff::default(),
                    generation: publisher.current().generation,
                })));
            }
            Applied::Config { config, diff } => (
                Update::Config {
                    config: Arc::clone(&config),
                    version,
                    diff: ConfigDiff::clone(&diff),
                },
                CommittedChange::Config { config },
                diff.summary(),
                Box::new(move |generation| {
                    Reply::Config(Box::new(ConfigOutcome {
                        version,
                        diff: *diff,
                        generation,
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
