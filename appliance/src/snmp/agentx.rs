//! One AgentX session (RFC 2741) with snmpd as master agent, over its
//! unix socket: open, register POOLGATE-MIB's subtree, answer get, getnext
//! and getbulk from a fresh [`Tree`], send notifications. The PDU
//! encodings are the `agentx` crate's; this is the session around them.
//! Sets are refused (the MIB is read-only, and snmpd's access control
//! gives no one write access to it).

use std::path::Path;
use std::time::{Duration, Instant};

use agentx::encodings::{ID, OctetString, SearchRange, VarBind, VarBindList};
use agentx::pdu::{self, Header, ResError, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::mib::{self, Tree, Value};

/// A PDU larger than this is a broken master or stream.
const MAX_PAYLOAD: u32 = 256 * 1024;
/// Varbinds of one getbulk answer at most.
const MAX_BULK: usize = 1024;
/// How long snmpd waits for an answer before it gives up on us.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the master agent refused {what}: {error:?}")]
    Refused { what: &'static str, error: ResError },
    #[error("a PDU of {0} bytes")]
    TooLarge(u32),
    #[error("the master agent closed the session")]
    Closed,
}

fn to_id(oid: &[u32]) -> ID {
    ID::try_from(oid.to_vec()).expect("MIB names are shorter than 256 sub-identifiers")
}

fn from_id(id: &ID) -> Vec<u32> {
    let text = id.to_string();
    if text.is_empty() {
        return Vec::new();
    }
    text.split('.').filter_map(|s| s.parse().ok()).collect()
}

fn value(value: &Value) -> agentx::encodings::Value {
    use agentx::encodings::Value as V;
    match value {
        Value::Integer(n) => V::Integer(*n),
        Value::Text(text) => V::OctetString(OctetString(text.clone())),
        Value::Gauge(n) => V::Gauge32(*n),
        Value::Counter64(n) => V::Counter64(*n),
    }
}

/// One whole PDU (header and payload) from `stream`.
async fn read_pdu(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, SessionError> {
    let mut bytes = vec![0; 20];
    stream.read_exact(&mut bytes).await?;
    let header = Header::from_bytes(&bytes)?;
    if header.payload_length > MAX_PAYLOAD {
        return Err(SessionError::TooLarge(header.payload_length));
    }
    bytes.resize(20 + header.payload_length as usize, 0);
    stream.read_exact(&mut bytes[20..]).await?;
    Ok(bytes)
}

/// An open session. Its PDUs are read by a task of their own, so waiting
/// for the next one can be given up (in a `select!`) without losing part
/// of it.
pub(crate) struct Session {
    writer: OwnedWriteHalf,
    incoming: mpsc::Receiver<Result<Vec<u8>, SessionError>>,
    reader: JoinHandle<()>,
    session_id: u32,
    packet_id: u32,
    started: Instant,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The session before its reader starts: open and register.
struct Opening {
    stream: UnixStream,
    packet_id: u32,
}

impl Opening {
    fn next_packet(&mut self) -> u32 {
        self.packet_id = self.packet_id.wrapping_add(1);
        self.packet_id
    }

    /// The master's answer to an administrative PDU, refused unless it is
    /// a success.
    async fn response(&mut self, what: &'static str) -> Result<pdu::Response, SessionError> {
        let bytes = read_pdu(&mut self.stream).await?;
        let response = pdu::Response::from_bytes(&bytes)?;
        match response.res_error {
            ResError::NoAgentXError => Ok(response),
            error => Err(SessionError::Refused { what, error }),
        }
    }
}

impl Session {
    /// Connect to `socket`, open a session and register the subtree.
    pub(crate) async fn open(socket: &Path, started: Instant) -> Result<Self, SessionError> {
        let stream = UnixStream::connect(socket).await?;
        let mut opening = Opening {
            stream,
            packet_id: 0,
        };
        let mut open = pdu::Open::new(to_id(&mib::ROOT), "poolgate");
        open.timeout = TIMEOUT;
        open.header.packet_id = opening.next_packet();
        opening.stream.write_all(&open.to_bytes()?).await?;
        let response = opening.response("open").await?;
        let session_id = response.header.session_id;
        let mut register = pdu::Register::new(to_id(&mib::ROOT));
        register.header.session_id = session_id;
        register.header.packet_id = opening.next_packet();
        opening.stream.write_all(&register.to_bytes()?).await?;
        opening.response("register").await?;
        let (mut read, writer) = opening.stream.into_split();
        let (sender, incoming) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                let pdu = read_pdu(&mut read).await;
                let failed = pdu.is_err();
                if sender.send(pdu).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Self {
            writer,
            incoming,
            reader,
            session_id,
            packet_id: opening.packet_id,
            started,
        })
    }

    fn next_packet(&mut self) -> u32 {
        self.packet_id = self.packet_id.wrapping_add(1);
        self.packet_id
    }

    /// The next PDU from the master. Cancel-safe.
    pub(crate) async fn next_pdu(&mut self) -> Result<Vec<u8>, SessionError> {
        match self.incoming.recv().await {
            Some(pdu) => pdu,
            None => Err(SessionError::Closed),
        }
    }

    fn uptime(&self) -> Duration {
        // TimeTicks wrap after 497 days; so does the Response's field.
        let ticks = self.started.elapsed().as_millis() / 10 % (1u128 << 32);
        Duration::from_millis(u64::try_from(ticks * 10).unwrap_or(0))
    }

    /// Answer one PDU from the master with values from `tree` (built only
    /// when a request needs it).
    pub(crate) async fn answer(
        &mut self,
        bytes: &[u8],
        tree: impl FnOnce() -> Tree,
    ) -> Result<(), SessionError> {
        let header = Header::from_bytes(bytes)?;
        let mut response = pdu::Response::from_header(&header);
        response.sys_uptime = self.uptime();
        match header.ty {
            Type::Get => {
                let get = pdu::Get::from_bytes(bytes)?;
                let tree = tree();
                let binds = get
                    .sr
                    .0
                    .iter()
                    .map(|range| {
                        let name = from_id(&range.start);
                        let data = match tree.get(&name) {
                            Some(found) => value(found),
                            None if name.starts_with(&mib::ROOT) => {
                                agentx::encodings::Value::NoSuchInstance
                            }
                            None => agentx::encodings::Value::NoSuchObject,
                        };
                        VarBind::new(to_id(&name), data)
                    })
                    .collect();
                response.vb = Some(VarBindList(binds));
            }
            Type::GetNext => {
                let next = pdu::GetNext::from_bytes(bytes)?;
                let tree = tree();
                let binds = next
                    .sr
                    .0
                    .iter()
                    .map(|range| next_bind(&tree, range))
                    .collect();
                response.vb = Some(VarBindList(binds));
            }
            Type::GetBulk => {
                let bulk = pdu::GetBulk::from_bytes(bytes)?;
                let tree = tree();
                response.vb = Some(VarBindList(bulk_binds(&tree, &bulk)));
            }
            Type::TestSet => {
                response.res_error = ResError::ProcessingError;
                response.res_index = 1;
            }
            Type::CommitSet | Type::UndoSet | Type::CleanupSet => {}
            Type::Close => return Err(SessionError::Closed),
            // Answers to our notifications; nothing else is expected.
            _ => return Ok(()),
        }
        if header.ty == Type::CleanupSet {
            return Ok(());
        }
        self.writer.write_all(&response.to_bytes()?).await?;
        Ok(())
    }

    /// Send a notification: `sysUpTime.0`, `snmpTrapOID.0`, then `objects`.
    pub(crate) async fn notify(
        &mut self,
        trap: &[u32],
        objects: Vec<(Vec<u32>, Value)>,
    ) -> Result<(), SessionError> {
        let ticks = i32::try_from(self.uptime().as_millis() / 10 % (1 << 31)).unwrap_or(0);
        let mut binds = vec![
            VarBind::new(
                to_id(&mib::SYS_UPTIME),
                agentx::encodings::Value::TimeTicks(ticks),
            ),
            VarBind::new(
                to_id(&mib::SNMP_TRAP_OID),
                agentx::encodings::Value::ObjectIdentifier(to_id(trap)),
            ),
        ];
        binds.extend(
            objects
                .iter()
                .map(|(name, data)| VarBind::new(to_id(name), value(data))),
        );
        let mut notify = pdu::Notify::new(VarBindList(binds));
        notify.header.session_id = self.session_id;
        notify.header.packet_id = self.next_packet();
        self.writer.write_all(&notify.to_bytes()?).await?;
        Ok(())
    }

    /// Close the session (on shutdown).
    pub(crate) async fn close(mut self) {
        let mut close = pdu::Close::new(pdu::CloseReason::Shutdown);
        close.header.session_id = self.session_id;
        close.header.packet_id = self.next_packet();
        if let Ok(bytes) = close.to_bytes() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.writer.write_all(&bytes)).await;
        }
    }
}

fn next_bind(tree: &Tree, range: &SearchRange) -> VarBind {
    let start = from_id(&range.start);
    let end = from_id(&range.end);
    match tree.next(&start, range.start.include == 1, &end) {
        Some((name, found)) => VarBind::new(to_id(name), value(found)),
        None => VarBind::new(to_id(&start), agentx::encodings::Value::EndOfMibView),
    }
}

/// RFC 2741 §7.2.3.3: the non-repeaters once each, then up to
/// max-repetitions rounds of the others, each from where it last was.
fn bulk_binds(tree: &Tree, bulk: &pdu::GetBulk) -> Vec<VarBind> {
    let ranges = &bulk.sr.0;
    let split = usize::from(bulk.non_repeaters).min(ranges.len());
    let mut binds: Vec<VarBind> = ranges[..split]
        .iter()
        .map(|range| next_bind(tree, range))
        .collect();
    let mut repeaters: Vec<SearchRange> = ranges[split..].to_vec();
    for _ in 0..bulk.max_repetitions {
        if repeaters.is_empty() || binds.len() >= MAX_BULK {
            break;
        }
        let mut all_ended = true;
        for range in &mut repeaters {
            let bind = next_bind(tree, range);
            if bind.data != agentx::encodings::Value::EndOfMibView {
                all_ended = false;
            }
            range.start = bind.name.clone();
            range.start.include = 0;
            binds.push(bind);
        }
        if all_ended {
            break;
        }
    }
    binds
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn ids_round_trip() {
        let oid = mib::oid(&[1, 1, 1, 4]);
        assert_eq!(from_id(&to_id(&oid)), oid);
        assert!(from_id(&ID::default()).is_empty());
        assert_eq!(
            from_id(&ID::from_str("1.3.6.1").expect("parses")),
            [1, 3, 6, 1]
        );
    }
}
