//! The sync link: the listener (through the accept layer, label
//! `ha-sync`), the joiner's dialer, the pairing exchange and the session
//! that follows a paired `hello` on either side.
//!
//! Bounds: a message is at most `protocol::MAX_LINE` bytes; the first
//! message must arrive within [`FIRST_MESSAGE`]; a link on which nothing
//! arrives for [`SILENCE`] is closed (each side pings every [`PING`]); the
//! dialer waits [`REDIAL`] between attempts. A session that falls behind
//! the committed stream closes and catches up on the next link.
//!
//! CA bundles go first on a catch-up (a config may name them), then each
//! upload or deletion as it is committed; the follower applies them through
//! its control task. Users and API token hashes follow the admin states in
//! [`lead`] and are sent again when they change (checked every
//! [`CREDENTIALS_CHECK`]). An admin-installed appliance certificate travels
//! the same way to a peer speaking protocol 2 and is installed by
//! [`follow`] unless it is the one in use (a generated one stays each
//! appliance's own; neither is what the link pins: that is the sync
//! identity, `identity`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::protocol::{self, Message, ProofOf, Role, Side};
use super::{Command, Ha, HaError, lock};
use crate::config::AdminState;
use crate::control::{CommittedChange, ControlError, PeerChange, Source};
use crate::events::{EventKind, NewEvent};
use crate::net;

const FIRST_MESSAGE: Duration = Duration::from_secs(10);
const SILENCE: Duration = Duration::from_secs(45);
const PING: Duration = Duration::from_secs(15);
const REDIAL: Duration = Duration::from_secs(1);
/// How often a frame from the peer is noted as "the link was up then".
const HEARD_EVERY: Duration = Duration::from_secs(5);
const CONNECT: Duration = Duration::from_secs(10);
/// How often the active looks whether users or tokens changed.
const CREDENTIALS_CHECK: Duration = Duration::from_secs(1);
/// Versions sent one by one on a catch-up; further behind, the latest
/// alone (with a rebase).
const CATCH_UP: usize = 100;

/// The accept layer's limits for the sync listener: one peer, a few
/// attempts at once.
fn limits() -> net::Limits {
    net::Limits {
        max_connections: 8,
        max_per_source: 4,
        handshake_timeout: Duration::from_secs(10),
        header_timeout: FIRST_MESSAGE,
        idle_timeout: SILENCE,
        evict_idle_after: None,
    }
}

/// Bind the sync listener. Logs its `listening` line (`ha-sync`).
pub(crate) async fn bind(
    address: SocketAddr,
    gates: &net::Registry,
) -> Result<net::Listener, net::BindError> {
    let listener = net::bind_tcp("ha-sync", address).await?;
    Ok(net::Listener::new(
        listener,
        gates.gate("ha-sync", limits()),
    ))
}

/// Serve the sync listener (if any) and dial the peer when this appliance
/// joined it, until `shutdown`.
pub(crate) async fn serve(
    ha: Arc<Ha>,
    listener: Option<net::Listener>,
    shutdown: CancellationToken,
) {
    let accepting = async {
        let Some(listener) = listener else { return };
        accept(Arc::clone(&ha), listener, shutdown.clone()).await;
    };
    let keepalived = async {
        let Some(vrrp) = ha.vrrp.clone() else { return };
        super::keepalived::follow(Arc::clone(&ha), vrrp, shutdown.clone()).await;
    };
    tokio::join!(
        accepting,
        dial(Arc::clone(&ha), shutdown.clone()),
        keepalived
    );
}

async fn accept(ha: Arc<Ha>, mut listener: net::Listener, shutdown: CancellationToken) {
    let config = match super::pin::server_config(&ha.identity, Arc::clone(&ha.pins)) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "HA sync listener cannot build its TLS config; not serving");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            conn = listener.accept() => conn,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let (ha, acceptor, shutdown) = (Arc::clone(&ha), acceptor.clone(), shutdown.clone());
        sessions.spawn(async move {
            let net::Conn { stream, peer, slot } = conn;
            let activity = Arc::new(net::Activity::default());
            let tls =
                match net::accept::tls_handshake(&acceptor, stream, peer, &slot, &activity).await {
                    Ok(tls) => tls,
                    Err(error) => {
                        ha.refused(peer, &error.to_string());
                        return;
                    }
                };
            let fingerprint = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| protocol::fingerprint(der.as_ref()))
                .unwrap_or_default();
            if ha.pins.pinned().as_deref() == Some(fingerprint.as_str()) {
                if let Err(why) = session(&ha, tls, &shutdown).await {
                    tracing::info!(%peer, why, "HA sync link closed");
                }
            } else {
                pairing(&ha, tls, &fingerprint, peer).await;
            }
            drop(slot);
        });
    }
    sessions.shutdown().await;
}

/// Dial the peer while this appliance is the joiner of a pair.
async fn dial(ha: Arc<Ha>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        if let Some(pair) = ha.pair().filter(|pair| pair.joiner) {
            match connect(&ha, &pair.peer_address, Some(pair.fingerprint.clone())).await {
                Ok((stream, _)) => {
                    failures = 0;
                    if let Err(why) = session(&ha, stream, &shutdown).await {
                        tracing::info!(peer = %pair.peer_address, why, "HA sync link closed");
                    }
                }
                Err(why) => {
                    failures += 1;
                    // Once at WARN, then quietly until it works again.
                    if failures == 1 {
                        tracing::warn!(peer = %pair.peer_address, why, "Cannot reach the HA peer; retrying");
                    } else {
                        tracing::debug!(peer = %pair.peer_address, why, "Cannot reach the HA peer");
                    }
                    ha.set_link(|link| {
                        link.up = false;
                        link.last_error = Some(why);
                    });
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = ha.wake.notified() => {}
            () = tokio::time::sleep(REDIAL) => {}
        }
    }
}

type ClientStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `address` that accepts exactly `expected` (or, when
/// joining, any certificate: returned with its fingerprint).
async fn connect(
    ha: &Ha,
    address: &str,
    expected: Option<String>,
) -> Result<(ClientStream, String), String> {
    let address: SocketAddr = address
        .parse()
        .map_err(|_| format!("{address} is not IP:port"))?;
    let seen = Arc::new(Mutex::new(None));
    let config = super::pin::client_config(&ha.identity, expected, Arc::clone(&seen))
        .map_err(|error| error.to_string())?;
    let tcp = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let tls = tokio::time::timeout(
        CONNECT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS with {address} timed out"))?
    .map_err(|error| format!("TLS with {address} failed: {error}"))?;
    let fingerprint = lock(&seen).clone().unwrap_or_default();
    Ok((tls, fingerprint))
}

fn own_fingerprint(ha: &Ha) -> String {
    super::identity::fingerprint(&ha.identity)
}

/// What a successful join learnt of the peer.
pub(super) struct Joined {
    pub peer_id: String,
    pub fingerprint: String,
}

/// The joiner's side of pairing.
pub(super) async fn join(ha: &Ha, address: SocketAddr, code: &str) -> Result<Joined, HaError> {
    let unreachable = |why: String| {
        // The peer's listener turned our certificate away (TLS 1.3 says so
        // at the first read or write): it lets an unknown certificate
        // through only while a code is open.
        if why.contains("received fatal alert") {
            HaError::Field {
                field: "code",
                message: format!(
                    "the peer has no pairing code open (or it expired); create one on the peer ({why})"
                ),
            }
        } else {
            HaError::Field {
                field: "peer",
                message: why,
            }
        }
    };
    let (stream, theirs) = connect(ha, &address.to_string(), None)
        .await
        .map_err(unreachable)?;
    let ours = own_fingerprint(ha);
    let key = protocol::code_key(code);
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let join = Message::Join {
        appliance_id: ha.appliance_id.clone(),
        proof: protocol::proof(&key, ProofOf::Joiner, &theirs, &ours),
    };
    send(&mut writer, &join)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(FIRST_MESSAGE, read_frame(&mut reader, &mut buf))
        .await
        .map_err(|_| unreachable(format!("{address} did not answer the join")))?
        .map_err(unreachable)?;
    match answer.map(|frame| frame.message) {
        Some(Message::Joined {
            appliance_id,
            proof,
        }) => {
            let expected = protocol::proof(&key, ProofOf::Joined, &theirs, &ours);
            if !protocol::proof_matches(&expected, &proof) {
                tracing::warn!(%address, "HA pairing refused: the peer's proof does not match (not the appliance that showed the code?)");
                return Err(HaError::Field {
                    field: "peer",
                    message: "the peer could not prove it knows the code; not paired".into(),
                });
            }
            if appliance_id == ha.appliance_id {
                return Err(unreachable("that is this appliance".into()));
            }
            let _ = writer.shutdown().await;
            Ok(Joined {
                peer_id: appliance_id,
                fingerprint: theirs,
            })
        }
        Some(Message::Refused { reason }) => Err(HaError::Field {
            field: "code",
            message: format!("the peer refused: {reason}"),
        }),
        _ => Err(unreachable(format!(
            "{address} did not answer as a poolgate sync listener"
        ))),
    }
}

/// The joined side of pairing: a connection with an unpinned certificate
/// (let through only while a code is open) may send one `join`.
async fn pairing<S>(ha: &Arc<Ha>, stream: S, theirs: &str, from: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let first = tokio::time::timeout(FIRST_MESSAGE, read_frame(&mut reader, &mut buf)).await;
    let Ok(Ok(Some(frame))) = first else {
        ha.refused(from, &format!("certificate {theirs} not pinned"));
        return;
    };
    let Message::Join {
        appliance_id,
        proof,
    } = frame.message
    else {
        ha.refused(from, &format!("certificate {theirs} not pinned"));
        let _ = send(
            &mut writer,
            &Message::Refused {
                reason: "certificate not pinned".into(),
            },
        )
        .await;
        return;
    };
    let ours = own_fingerprint(ha);
    let refuse = |reason: &str| {
        ha.stats.refused_joins.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %from, joiner = %appliance_id, reason, "HA pairing refused");
        ha.events.record(
            NewEvent::new(
                EventKind::Ha,
                format!("Pairing from {from} refused: {reason}"),
            )
            .detail(serde_json::json!({"from": from.to_string(), "reason": reason})),
        );
        Message::Refused {
            reason: reason.to_owned(),
        }
    };
    if ha.pair().is_some() {
        let _ = send(&mut writer, &refuse("this appliance is paired already")).await;
        return;
    }
    if appliance_id == ha.appliance_id || appliance_id.is_empty() || appliance_id.len() > 64 {
        let _ = send(&mut writer, &refuse("unacceptable appliance id")).await;
        return;
    }
    let key = match ha.take_code(|key| {
        protocol::proof_matches(
            &protocol::proof(key, ProofOf::Joiner, &ours, theirs),
            &proof,
        )
    }) {
        Ok(key) => key,
        Err(why) => {
            let _ = send(&mut writer, &refuse(why)).await;
            return;
        }
    };
    let (peer_id, fingerprint) = (appliance_id.clone(), theirs.to_owned());
    let recorded = ha
        .blocking(move |ha| ha.paired(&peer_id, from, &fingerprint))
        .await;
    if let Err(error) = recorded {
        tracing::error!(%error, "Cannot store the HA pair");
        let _ = send(&mut writer, &refuse("the pair cannot be stored")).await;
        return;
    }
    let joined = Message::Joined {
        appliance_id: ha.appliance_id.clone(),
        proof: protocol::proof(&key, ProofOf::Joined, &ours, theirs),
    };
    let _ = send(&mut writer, &joined).await;
    let _ = writer.shutdown().await;
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, message: &Message) -> std::io::Result<()> {
    writer.write_all(&protocol::encode(message)).await?;
    writer.flush().await
}

/// The next message, `None` at the end of the stream. Bounded by
/// `MAX_LINE`.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<protocol::Frame>, String> {
    buf.clear();
    let limit = (protocol::MAX_LINE + 1) as u64;
    let read = (&mut *reader)
        .take(limit)
        .read_until(b'\n', buf)
        .await
        .map_err(|error| error.to_string())?;
    if read == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > protocol::MAX_LINE {
            "message too long".into()
        } else {
            "the link closed mid-message".into()
        });
    }
    protocol::decode(buf)
        .map(Some)
        .map_err(|error| error.to_string())
}

/// A frame from the peer as either session takes it: the link is alive
/// (the silence deadline moves, the pair notes it was linked now and then);
/// a frame that could not be read is answered `refused`. `Ok(None)`: nothing
/// to act on.
async fn arrived<W: AsyncWrite + Unpin>(
    ha: &Arc<Ha>,
    writer: &mut W,
    frame: Option<Incoming>,
    silence: &mut std::pin::Pin<Box<tokio::time::Sleep>>,
    heard: &mut Heard,
) -> Result<Option<Message>, String> {
    let Some(frame) = frame else {
        return Err("the peer closed the link".into());
    };
    silence
        .as_mut()
        .reset(tokio::time::Instant::now() + SILENCE);
    if heard.due() {
        ha.blocking(Ha::linked).await.map_err(|e| e.to_string())?;
    }
    match frame {
        Ok(frame) => Ok(Some(frame.message)),
        Err(reason) => {
            send(writer, &Message::Refused { reason })
                .await
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

/// When a frame from the peer last moved `Pair::linked_at` on: at most
/// every [`HEARD_EVERY`] (the peer pings every [`PING`]).
#[derive(Debug)]
struct Heard(tokio::time::Instant);

impl Default for Heard {
    fn default() -> Self {
        Self(tokio::time::Instant::now())
    }
}

impl Heard {
    fn due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.0) < HEARD_EVERY {
            return false;
        }
        self.0 = now;
        true
    }
}

/// What the reader task hands the session.
type Incoming = Result<protocol::Frame, String>;

/// A paired link, from either side: hello, then lead or follow.
async fn session<S>(ha: &Arc<Ha>, stream: S, shutdown: &CancellationToken) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let (frames_tx, mut frames) = mpsc::channel::<Incoming>(16);
    let reader_task = tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            let frame = match read_frame(&mut reader, &mut buf).await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => return,
                Err(error) => Err(error),
            };
            let fatal = frame
                .as_ref()
                .is_err_and(|e| !e.starts_with("message is not"));
            if frames_tx.send(frame).await.is_err() || fatal {
                return;
            }
        }
    });
    // The first live session is the one the API's requests go to (a
    // second connection with the pinned certificate does not take over).
    let (commands_tx, commands) = mpsc::channel(4);
    {
        let mut current = lock(&ha.session);
        if current.as_ref().is_none_or(|tx| tx.is_closed()) {
            *current = Some(commands_tx.clone());
        }
    }
    let result = run(ha, &mut writer, &mut frames, commands, shutdown).await;
    reader_task.abort();
    let primary = {
        let mut current = lock(&ha.session);
        let primary = current
            .as_ref()
            .is_some_and(|tx| tx.same_channel(&commands_tx));
        if primary {
            *current = None;
        }
        primary
    };
    if primary {
        ha.set_link(|link| {
            link.up = false;
            link.sync = "unknown";
            if let Err(why) = &result {
                link.last_error = Some(why.clone());
            }
        });
    }
    let _ = writer.shutdown().await;
    result
}

/// What both sides said at hello.
struct PeerHello {
    appliance_id: String,
    role: Role,
    version: i64,
    synced: Option<i64>,
    /// The protocol this session speaks (the lower of the two).
    protocol: u32,
}

async fn run<W: AsyncWrite + Unpin>(
    ha: &Arc<Ha>,
    writer: &mut W,
    frames: &mut mpsc::Receiver<Incoming>,
    commands: mpsc::Receiver<Command>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    // Subscribed before the hello: nothing committed from here on is missed.
    let committed = ha.control.subscribe();
    let Some(pair) = ha.pair() else {
        return Err("not paired".into());
    };
    let desired = ha.control.desired();
    let licensing = ha.licensing.clone();
    let licence = tokio::task::spawn_blocking(move || licensing.status())
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|status| serde_json::to_value(status).ok());
    // What this side did while the peer could not hear of it: config
    // versions after the last synced one, member actions after the link
    // was last known up.
    let synced_base = pair.synced;
    let (versions_alone, members_alone) = ha
        .blocking(move |ha| {
            let versions = match synced_base {
                Some(synced) => !ha.own_versions_after(synced)?.is_empty(),
                None => false,
            };
            Ok((versions, ha.own_admin_after_link()?))
        })
        .await
        .map_err(|e| e.to_string())?;
    let changed_alone = versions_alone || !members_alone.is_empty();
    let hello = Message::Hello {
        appliance_id: ha.appliance_id.clone(),
        role: pair.role,
        version: desired.version,
        synced: pair.synced,
        admin_address: desired.config.listen.admin.to_string(),
        joiner: pair.joiner,
        licence,
        changed_alone,
        keepalived: ha.keepalived_drives_role(),
    };
    send(writer, &hello).await.map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(FIRST_MESSAGE, frames.recv())
        .await
        .map_err(|_| "no hello from the peer".to_owned())?
        .ok_or("the link closed before the hello")??;
    let session_protocol = protocol::negotiate(first.protocol).map_err(|e| e.to_string())?;
    let Message::Hello {
        appliance_id,
        role,
        version,
        synced,
        admin_address,
        joiner,
        licence,
        changed_alone: peer_changed_alone,
        keepalived: peer_keepalived,
    } = first.message
    else {
        return Err("the peer's first message was not a hello".into());
    };
    if appliance_id != pair.peer_id {
        return Err(format!(
            "the pinned certificate says {appliance_id}, the pair {}",
            pair.peer_id
        ));
    }
    ha.set_link(|link| {
        link.up = true;
        link.sync = "catching_up";
        link.peer_version = Some(version);
        link.peer_admin = Some(admin_address);
        link.peer_protocol = Some(first.protocol);
        link.peer_licence = licence;
        link.last_error = None;
    });
    tracing::info!(peer = %appliance_id, protocol = session_protocol, peer_role = role.as_str(), peer_version = version, peer_changed_alone, changed_alone, "HA sync link up");
    let us = Side {
        appliance_id: &ha.appliance_id,
        version: desired.version,
        joiner: pair.joiner,
        role: pair.role,
        changed_alone,
        keepalived: ha.keepalived_drives_role(),
    };
    let them = Side {
        appliance_id: &appliance_id,
        version,
        joiner,
        role,
        changed_alone: peer_changed_alone,
        keepalived: peer_keepalived,
    };
    if let protocol::Decision::Active(won, rule) = protocol::decide(&us, &them) {
        let next = if won { Role::Active } else { Role::Standby };
        let winner = if won { "this appliance" } else { "the peer" };
        let why = match rule {
            protocol::Rule::OnlyOneChanged => format!(
                "split-brain rule: only {winner} committed changes while the link was down, so its history wins (versions: this {}, peer {version})",
                desired.version
            ),
            protocol::Rule::Versions => format!(
                "split-brain rule: this appliance was {}, the peer {}{}; by the higher config version, then the joined side, {winner} wins (versions: this {}, peer {version})",
                pair.role.as_str(),
                role.as_str(),
                if changed_alone && peer_changed_alone {
                    ", and both committed changes while the link was down"
                } else {
                    ""
                },
                desired.version
            ),
        };
        if next != pair.role {
            if next == Role::Standby {
                tracing::warn!(peer = %appliance_id, "Split brain resolved: the peer's history wins; re-syncing from it");
            }
            ha.blocking(move |ha| ha.set_role(next, &why))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // Standby after a split: the active's admin states replace the member
    // actions made here meanwhile.
    if ha.role() == Some(Role::Standby) && !members_alone.is_empty() {
        ha.blocking(move |ha| ha.record_members_not_applied(&members_alone))
            .await
            .map_err(|e| e.to_string())?;
    }
    ha.blocking(Ha::linked).await.map_err(|e| e.to_string())?;
    let peer = PeerHello {
        appliance_id,
        role,
        version,
        synced,
        protocol: session_protocol,
    };
    match ha.role() {
        Some(Role::Active) => lead(ha, writer, frames, commands, committed, &peer, shutdown).await,
        Some(Role::Standby) => follow(ha, writer, frames, commands, &peer, shutdown).await,
        None => Err("unpaired".into()),
    }
}

/// The active's side: catch the standby up, then stream every change.
async fn lead<W: AsyncWrite + Unpin>(
    ha: &Arc<Ha>,
    writer: &mut W,
    frames: &mut mpsc::Receiver<Incoming>,
    mut commands: mpsc::Receiver<Command>,
    mut committed: broadcast::Receiver<crate::control::Committed>,
    peer: &PeerHello,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let store = ha.store.clone();
    let my_version = ha.control.desired().version;
    let (peer_version, peer_synced) = (peer.version, peer.synced);
    let clean = peer.role == Role::Standby
        && peer_synced == Some(peer_version)
        && peer_version <= my_version;
    let plan = tokio::task::spawn_blocking(move || {
        let missing = if clean {
            store.config_versions_after(peer_version, CATCH_UP + 1)?
        } else {
            Vec::new()
        };
        let (versions, rebase) = if clean && missing.len() <= CATCH_UP {
            (missing, None)
        } else if my_version > 0 {
            let base = peer_synced.unwrap_or(0).clamp(0, my_version - 1);
            (store.latest_config()?.into_iter().collect(), Some(base))
        } else {
            (Vec::new(), None)
        };
        Ok::<_, crate::store::StoreError>((
            versions,
            rebase,
            store.admin_rows()?,
            store.ca_bundles()?,
        ))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let (versions, rebase, admin, bundles) = plan;
    for (name, pem) in bundles {
        send(
            writer,
            &Message::CaBundle {
                name,
                pem: Some(pem),
            },
        )
        .await
        .map_err(io)?;
    }
    let mut last_sent = peer_version;
    for version in versions {
        last_sent = version.id;
        let message = Message::Config {
            version: version.id,
            toml: version.toml,
            origin: version.source,
            rebase,
        };
        send(writer, &message).await.map_err(io)?;
    }
    if rebase.is_some() {
        tracing::info!(peer = %peer.appliance_id, base = ?rebase, version = last_sent, "HA peer re-syncs from this appliance's latest version");
    }
    for ((pool, member), state, changed_at) in admin {
        let message = Message::Admin {
            pool,
            member,
            state: state.as_str().to_owned(),
            changed_at,
        };
        send(writer, &message).await.map_err(io)?;
    }
    let mut credentials = credentials_of(ha).await?;
    send(
        writer,
        &Message::Credentials {
            credentials: credentials.clone(),
        },
    )
    .await
    .map_err(io)?;
    // An admin-installed certificate, to a peer that takes it.
    let carries_certificate = peer.protocol >= 2;
    let mut certificate = installed_certificate(ha).await?;
    if let (true, Some(message)) = (carries_certificate, &certificate) {
        send(writer, message).await.map_err(io)?;
    }
    send(writer, &Message::CaughtUp { version: last_sent })
        .await
        .map_err(io)?;
    if last_sent == peer_version {
        ha.set_link(|link| link.sync = "in_sync");
    }
    let mut ping = tokio::time::interval(PING);
    let mut check = tokio::time::interval(CREDENTIALS_CHECK);
    let mut silence = Box::pin(tokio::time::sleep(SILENCE));
    let mut writer_changes = ha.writer();
    let mut heard = Heard::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = &mut silence => return Err("the peer went silent".into()),
            changed = writer_changes.changed() => {
                if changed.is_err() || ha.role() != Some(Role::Active) {
                    return Err("this appliance is no longer active (keepalived); a new hello follows".into());
                }
            }
            _ = ping.tick() => send(writer, &Message::Ping).await.map_err(io)?,
            _ = check.tick() => {
                let now = credentials_of(ha).await?;
                if now != credentials {
                    credentials = now;
                    send(writer, &Message::Credentials { credentials: credentials.clone() })
                        .await
                        .map_err(io)?;
                }
                let now = installed_certificate(ha).await?;
                if now != certificate {
                    certificate = now;
                    if let (true, Some(message)) = (carries_certificate, &certificate) {
                        send(writer, message).await.map_err(io)?;
                    }
                }
            }
            change = committed.recv() => match change {
                Ok(change) => {
                    if let Some(message) = change_message(ha, change, &mut last_sent).await? {
                        send(writer, &message).await.map_err(io)?;
                        ha.set_link(|link| link.sync = "catching_up");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(format!("fell {missed} changes behind; catching up on the next link"));
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            command = commands.recv() => match command {
                Some(Command::Failover { new_active, done }) => {
                    // Give up the role first, so there is never a moment with two.
                    ha.blocking(|ha| ha.set_role(Role::Standby, "failover requested by the admin"))
                        .await
                        .map_err(|e| e.to_string())?;
                    send(writer, &Message::Failover { new_active }).await.map_err(io)?;
                    let _ = done.send(Ok(()));
                    return Ok(());
                }
                Some(Command::Unpair { done }) => {
                    let _ = send(writer, &Message::Unpair).await;
                    let _ = done.send(());
                    return Ok(());
                }
                None => return Ok(()),
            },
            frame = frames.recv() => {
                let Some(message) = arrived(ha, writer, frame, &mut silence, &mut heard).await? else {
                    continue;
                };
                match message {
                    Message::Ping => {}
                    Message::Synced { version } => {
                        // Also the standby's answer to a member action: it has it.
                        ha.blocking(move |ha| {
                            ha.update(|pair| pair.synced = Some(version))?;
                            ha.linked()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                        let current = ha.control.desired().version;
                        ha.set_link(|link| {
                            link.peer_version = Some(version);
                            if version == current {
                                link.sync = "in_sync";
                            }
                        });
                    }
                    Message::Failover { new_active } if new_active == peer.appliance_id => {
                        ha.blocking(|ha| ha.set_role(Role::Standby, "failover requested on the peer"))
                            .await
                            .map_err(|e| e.to_string())?;
                        let _ = send(writer, &Message::FailoverDone { new_active }).await;
                        return Ok(());
                    }
                    Message::Unpair => return peer_unpaired(ha).await,
                    Message::Refused { reason } => {
                        tracing::warn!(peer = %peer.appliance_id, reason, "The HA peer refused a change");
                        ha.set_link(|link| link.last_error = Some(reason));
                    }
                    other => {
                        let reason = format!("{} is not accepted by the active", kind(&other));
                        send(writer, &Message::Refused { reason }).await.map_err(io)?;
                    }
                }
            }
        }
    }
}

/// The appliance certificate as a message, if the admin installed it (a
/// generated one names this appliance: each keeps its own).
async fn installed_certificate(ha: &Ha) -> Result<Option<Message>, String> {
    let Some(certificates) = ha.certificates.clone() else {
        return Ok(None);
    };
    let pair = tokio::task::spawn_blocking(move || certificates.pem_pair())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(match pair {
        (_, _, true) => None,
        (certificate, key, false) => Some(Message::Certificate { certificate, key }),
    })
}

/// Install the active's certificate here unless it is the one in use;
/// `Ok(true)` when it was installed.
async fn take_certificate(ha: &Ha, certificate: String, key: String) -> Result<bool, String> {
    let Some(certificates) = ha.certificates.clone() else {
        return Ok(false);
    };
    tokio::task::spawn_blocking(move || {
        let (current, _, _) = certificates.pem_pair().map_err(|e| e.to_string())?;
        if current == certificate {
            return Ok(false);
        }
        match certificates.install(&certificate, &key) {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(problem)) => Err(problem.to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn credentials_of(ha: &Ha) -> Result<crate::store::Credentials, String> {
    let store = ha.store.clone();
    tokio::task::spawn_blocking(move || store.credentials())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The message a committed change becomes, if the peer lacks it.
async fn change_message(
    ha: &Arc<Ha>,
    change: crate::control::Committed,
    last_sent: &mut i64,
) -> Result<Option<Message>, String> {
    let store = ha.store.clone();
    match change.change {
        CommittedChange::Config { .. } => {
            if change.version <= *last_sent {
                return Ok(None);
            }
            *last_sent = change.version;
            let version = change.version;
            let stored = tokio::task::spawn_blocking(move || store.config_version(version))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(stored.map(|stored| Message::Config {
                version: stored.id,
                toml: stored.toml,
                origin: stored.source,
                rebase: None,
            }))
        }
        CommittedChange::CaBundle { name, bundle } => Ok(Some(Message::CaBundle {
            name,
            pem: bundle.map(|bundle| bundle.pem.clone()),
        })),
        CommittedChange::Member { member, state, .. } => {
            let (pool, name) = member.clone();
            let changed_at =
                tokio::task::spawn_blocking(move || store.admin_state_changed_at(&pool, &name))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
                    .unwrap_or_else(crate::clock::now_rfc3339);
            Ok(Some(Message::Admin {
                pool: member.0,
                member: member.1,
                state: state.as_str().to_owned(),
                changed_at,
            }))
        }
    }
}

/// The standby's side: apply what the active sends, through the control
/// task, and acknowledge each version.
async fn follow<W: AsyncWrite + Unpin>(
    ha: &Arc<Ha>,
    writer: &mut W,
    frames: &mut mpsc::Receiver<Incoming>,
    mut commands: mpsc::Receiver<Command>,
    peer: &PeerHello,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let source = Source::Peer {
        appliance_id: peer.appliance_id.clone(),
    };
    let mut ping = tokio::time::interval(PING);
    let mut silence = Box::pin(tokio::time::sleep(SILENCE));
    let mut failover: Option<oneshot::Sender<Result<(), String>>> = None;
    let mut writer_changes = ha.writer();
    let mut heard = Heard::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = &mut silence => return Err("the peer went silent".into()),
            changed = writer_changes.changed() => {
                if changed.is_err() || ha.role() != Some(Role::Standby) {
                    return Err("this appliance is no longer standby (keepalived); a new hello follows".into());
                }
            }
            _ = ping.tick() => send(writer, &Message::Ping).await.map_err(io)?,
            command = commands.recv() => match command {
                Some(Command::Failover { new_active, done }) => {
                    send(writer, &Message::Failover { new_active }).await.map_err(io)?;
                    failover = Some(done);
                }
                Some(Command::Unpair { done }) => {
                    let _ = send(writer, &Message::Unpair).await;
                    let _ = done.send(());
                    return Ok(());
                }
                None => return Ok(()),
            },
            frame = frames.recv() => {
                let Some(message) = arrived(ha, writer, frame, &mut silence, &mut heard).await? else {
                    continue;
                };
                match message {
                    Message::Ping => {}
                    Message::Config { version, toml, origin, rebase } => {
                        if let Some(base) = rebase
                            && ha.pair().is_some_and(|pair| pair.synced.is_some())
                        {
                            ha.blocking(move |ha| ha.record_not_applied(base))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        let change = PeerChange::Config { version, toml, origin, rebase };
                        match ha.control.peer(change, source.clone()).await {
                            Ok(applied) => {
                                ha.blocking(move |ha| ha.update(|pair| pair.synced = Some(applied)).map(|_| ()))
                                    .await
                                    .map_err(|e| e.to_string())?;
                                ha.set_link(|link| {
                                    link.sync = "in_sync";
                                    link.peer_version = Some(link.peer_version.unwrap_or(0).max(applied));
                                });
                                send(writer, &Message::Synced { version: applied }).await.map_err(io)?;
                            }
                            Err(error) => {
                                if matches!(error, ControlError::Replay { .. }) {
                                    ha.stats.refused_replays.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(peer = %peer.appliance_id, version, %error, "Replayed config version refused");
                                    ha.events.record(NewEvent::new(EventKind::Ha, format!("Config version {version} from the peer refused: {error}")));
                                } else {
                                    tracing::warn!(peer = %peer.appliance_id, version, %error, "Config version from the HA peer not applied");
                                }
                                ha.set_link(|link| link.last_error = Some(error.to_string()));
                                send(writer, &Message::Refused { reason: error.to_string() }).await.map_err(io)?;
                            }
                        }
                    }
                    Message::Admin { pool, member, state, changed_at } => {
                        let Some(state) = AdminState::parse(&state) else {
                            send(writer, &Message::Refused { reason: format!("unknown admin state {state:?}") }).await.map_err(io)?;
                            continue;
                        };
                        let change = PeerChange::Admin { member: (pool, member), state, changed_at };
                        if let Err(error) = ha.control.peer(change, source.clone()).await {
                            tracing::warn!(peer = %peer.appliance_id, %error, "Admin state from the HA peer not applied");
                            send(writer, &Message::Refused { reason: error.to_string() }).await.map_err(io)?;
                            continue;
                        }
                        // The acknowledgement: the active's member action is in step.
                        ha.blocking(Ha::linked).await.map_err(|e| e.to_string())?;
                        let version = ha.control.desired().version;
                        send(writer, &Message::Synced { version }).await.map_err(io)?;
                    }
                    Message::Failover { new_active } if new_active == ha.appliance_id => {
                        ha.blocking(|ha| ha.set_role(Role::Active, "failover requested on the peer, which handed over the active role"))
                            .await
                            .map_err(|e| e.to_string())?;
                        let _ = send(writer, &Message::FailoverDone { new_active }).await;
                        return Ok(());
                    }
                    Message::FailoverDone { new_active } if new_active == ha.appliance_id => {
                        if let Some(done) = failover.take() {
                            let _ = done.send(Ok(()));
                        }
                        return Ok(());
                    }
                    Message::Unpair => return peer_unpaired(ha).await,
                    Message::Synced { .. } => {}
                    Message::CaBundle { name, pem } => {
                        let applied = match pem {
                            Some(pem) => match crate::health::ca::parse(&name, &pem) {
                                Ok(bundle) => ha.control.put_ca_bundle(bundle, source.clone()).await.map(|_| ()).map_err(|e| e.to_string()),
                                Err(why) => Err(why),
                            },
                            None => ha.control.delete_ca_bundle(name.clone(), source.clone()).await.map(|_| ()).map_err(|e| e.to_string()),
                        };
                        if let Err(reason) = applied {
                            tracing::warn!(peer = %peer.appliance_id, ca_bundle = %name, reason, "CA bundle from the HA peer not applied");
                            send(writer, &Message::Refused { reason }).await.map_err(io)?;
                        }
                    }
                    Message::Certificate { certificate, key } => {
                        match take_certificate(ha, certificate, key).await {
                            Ok(true) => {
                                tracing::info!(peer = %peer.appliance_id, "Appliance certificate taken from the HA active");
                                ha.events.record(NewEvent::new(EventKind::System, "Appliance certificate installed from the HA active"));
                            }
                            Ok(false) => {}
                            Err(reason) => {
                                tracing::warn!(peer = %peer.appliance_id, reason, "Appliance certificate from the HA peer not installed");
                                send(writer, &Message::Refused { reason }).await.map_err(io)?;
                            }
                        }
                    }
                    Message::Credentials { credentials } => {
                        let store = ha.store.clone();
                        let replaced = tokio::task::spawn_blocking(move || store.replace_credentials(&credentials))
                            .await
                            .map_err(|e| e.to_string())?;
                        match replaced {
                            Ok(true) => tracing::info!(peer = %peer.appliance_id, "Users and API tokens taken from the HA active"),
                            Ok(false) => {}
                            Err(error) => {
                                tracing::warn!(peer = %peer.appliance_id, %error, "Users and API tokens from the HA peer not applied");
                                send(writer, &Message::Refused { reason: error.to_string() }).await.map_err(io)?;
                            }
                        }
                    }
                    Message::CaughtUp { version } => {
                        if ha.control.desired().version == version {
                            ha.blocking(move |ha| ha.update(|pair| pair.synced = Some(version)).map(|_| ()))
                                .await
                                .map_err(|e| e.to_string())?;
                            ha.set_link(|link| link.sync = "in_sync");
                        }
                    }
                    Message::Refused { reason } => {
                        if let Some(done) = failover.take() {
                            let _ = done.send(Err(reason.clone()));
                        }
                        tracing::warn!(peer = %peer.appliance_id, reason, "The HA peer refused a request");
                    }
                    other => {
                        let reason = format!("{} is not accepted by the standby", kind(&other));
                        send(writer, &Message::Refused { reason }).await.map_err(io)?;
                    }
                }
            }
        }
    }
}

/// The peer unpaired: so do we.
async fn peer_unpaired(ha: &Arc<Ha>) -> Result<(), String> {
    let pair = ha.pair();
    ha.blocking(|ha| ha.replace_pair(None))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(pair) = pair {
        tracing::warn!(peer = %pair.peer_id, "The HA peer unpaired; this appliance is standalone");
        ha.events.record(
            NewEvent::new(
                EventKind::Ha,
                format!("Unpaired from {}: the peer unpaired", pair.peer_id),
            )
            .detail(serde_json::json!({"peer": pair.peer_id, "role": null, "reason": "the peer unpaired"})),
        );
    }
    Ok(())
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Join { .. } => "join",
        Message::Joined { .. } => "joined",
        Message::Hello { .. } => "hello",
        Message::Config { .. } => "config",
        Message::Admin { .. } => "admin",
        Message::Credentials { .. } => "credentials",
        Message::Certificate { .. } => "certificate",
        Message::CaBundle { .. } => "ca_bundle",
        Message::Synced { .. } => "synced",
        Message::CaughtUp { .. } => "caught_up",
        Message::Failover { .. } => "failover",
        Message::FailoverDone { .. } => "failover_done",
        Message::Unpair => "unpair",
        Message::Ping => "ping",
        Message::Refused { .. } => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_are_read_one_per_line_until_the_end() {
        let mut text = protocol::encode(&Message::Ping);
        text.extend(protocol::encode(&Message::Synced { version: 3 }));
        text.extend(b"{\"protocol\":1,\"type\":\"teleport\"}\n");
        let mut reader = BufReader::new(&text[..]);
        let mut buf = Vec::new();
        let next =
            |frame: Result<Option<protocol::Frame>, String>| frame.map(|f| f.map(|f| f.message));
        assert_eq!(
            next(read_frame(&mut reader, &mut buf).await),
            Ok(Some(Message::Ping))
        );
        assert_eq!(
            next(read_frame(&mut reader, &mut buf).await),
            Ok(Some(Message::Synced { version: 3 }))
        );
        let unknown = read_frame(&mut reader, &mut buf).await;
        assert!(
            unknown.is_err_and(|e| e.starts_with("message is not")),
            "not fatal"
        );
        assert_eq!(next(read_frame(&mut reader, &mut buf).await), Ok(None));
    }

    #[tokio::test]
    async fn a_line_over_the_bound_is_refused_without_buffering_the_rest() {
        let mut text = vec![b'x'; protocol::MAX_LINE + 1000];
        text.push(b'\n');
        let mut reader = BufReader::new(&text[..]);
        let mut buf = Vec::new();
        let result = read_frame(&mut reader, &mut buf).await;
        assert_eq!(result.map(|_| ()), Err("message too long".to_owned()));
        assert!(buf.len() <= protocol::MAX_LINE + 1);
        let mut cut = protocol::encode(&Message::Ping);
        cut.pop();
        let mut reader = BufReader::new(&cut[..]);
        let result = read_frame(&mut reader, &mut buf).await;
        assert_eq!(
            result.map(|_| ()),
            Err("the link closed mid-message".to_owned())
        );
    }
}
