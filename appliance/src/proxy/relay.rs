//! Byte relay between a client and a member connection, both directions in
//! one task. Owns the TCP semantics the proxy promises:
//!
//! * half-close: EOF from one side becomes a FIN (`shutdown(Write)`) towards
//!   the other, and the opposite direction keeps flowing;
//! * resets: a side that resets (read or write fails with `ECONNRESET` /
//!   `EPIPE`) makes the relay reset the other side (`SO_LINGER` 0, close);
//! * idle timeout: no byte in either direction for `idle` closes both sides;
//! * memory: an idle connection holds no buffer. The copy loop reads into a
//!   per-thread scratch buffer and only keeps bytes of its own while the
//!   receiver is slower than the sender. The splice variant allocates its
//!   pipes on the first byte.
//!
//! Interchangeable engines (`RelayMode`): a copy loop, `splice(2)` through a
//! pipe, and `auto` (copy, then splice once a direction carries bulk data).
//! All pass the same tests; `docs/decisions/0300-proxy-relay-engine.md`
//! records the measurements behind the default.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::sys::socket::{MsgFlags, recv};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::on_wake::{OwnWaker, on_wake};
use crate::net::Activity;
use crate::state::{MemberCounters, ServiceCounters};

/// Largest chunk moved per system call.
const CHUNK: usize = 64 * 1024;

/// Which engine moves the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum RelayMode {
    /// `read` into a per-thread buffer, `write` out.
    Copy,
    /// `splice(2)` socket → pipe → socket, no copy through user space.
    Splice,
    /// Copy while exchanges are small; a direction switches to splice for
    /// good once one read fills the whole buffer (a bulk transfer), so short
    /// connections never pay for creating pipes.
    #[default]
    Auto,
}

impl RelayMode {
    /// `POOLGATE_RELAY=splice|copy` overrides the default (for measuring
    /// one engine against the other); anything else keeps the default.
    pub(crate) fn from_env() -> Self {
        match std::env::var("POOLGATE_RELAY").as_deref() {
            Ok("splice") => Self::Splice,
            Ok("copy") => Self::Copy,
            Ok("auto") => Self::Auto,
            _ => Self::default(),
        }
    }
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Both directions finished with a FIN.
    Closed,
    /// The client reset (or vanished); the member was reset in turn.
    ClientReset,
    /// The member reset; the client was reset in turn.
    MemberReset,
    /// Nothing moved for the idle timeout; both sides were closed.
    IdleTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Member,
}

/// One direction failed on `side`.
#[derive(Debug)]
struct Broken {
    side: Side,
    error: io::Error,
}

/// Where a relayed connection's bytes are counted: its member's and its
/// virtual service's counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meters<'a> {
    pub member: &'a MemberCounters,
    pub service: &'a ServiceCounters,
}

/// Relay until both directions are closed, one side resets, or nothing moves
/// for `idle`. Counts bytes into `meters` (in = client → member). The idle
/// timer wakes through `seldom`, which the caller's own rare signals share.
pub(crate) async fn relay(
    mode: RelayMode,
    client: &TcpStream,
    member: &TcpStream,
    idle: Duration,
    meters: Meters<'_>,
    seldom: &OwnWaker,
) -> Outcome {
    // Shared by both directions and the idle watch; nothing is ever in
    // flight here, so it is idle once no byte moved for `idle`.
    let activity = Activity::default();
    let upstream = Direction {
        from: (client, Side::Client),
        to: (member, Side::Member),
        activity: &activity,
        bytes: [&meters.member.bytes_in, &meters.service.bytes_in],
    };
    let downstream = Direction {
        from: (member, Side::Member),
        to: (client, Side::Client),
        activity: &activity,
        bytes: [&meters.member.bytes_out, &meters.service.bytes_out],
    };
    // The pumps are made where they are awaited: a future bound to a local
    // first and then moved keeps its room twice in this one's state, which
    // every idle connection holds. Each direction is polled only when it woke
    // the task (`on_wake`), and the timer only when it or a signal sharing
    // `seldom` did.
    let result = tokio::select! {
        biased;
        result = async {
            let (up, down) = (OwnWaker::new(), OwnWaker::new());
            tokio::try_join!(on_wake(&up, pump(mode, upstream)), on_wake(&down, pump(mode, downstream)))
        } => result.map(|_| ()),
        () = on_wake(seldom, activity.idle_for(idle)) => return close_idle(client, member),
    };
    match result {
        Ok(()) => Outcome::Closed,
        Err(Broken { side, error }) => {
            tracing::debug!(?side, %error, "Relay side failed; resetting the other");
            let (other, outcome) = match side {
                Side::Client => (member, Outcome::ClientReset),
                Side::Member => (client, Outcome::MemberReset),
            };
            // The caller drops both streams; with linger 0 that close is a RST.
            let _ = other.set_zero_linger();
            outcome
        }
    }
}

fn close_idle(client: &TcpStream, member: &TcpStream) -> Outcome {
    for stream in [client, member] {
        let _ = shutdown_write(stream);
    }
    Outcome::IdleTimeout
}

fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .map_err(io::Error::from)
}

fn is_gone(error: &io::Error) -> bool {
    // A FIN already sent, or a peer that is gone: nothing left to tell it.
    matches!(
        error.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// One direction of a relay: bytes read from `from` are written to `to`.
struct Direction<'a> {
    from: (&'a TcpStream, Side),
    to: (&'a TcpStream, Side),
    /// Shared by both directions.
    activity: &'a Activity,
    /// The member's and the service's count of this direction.
    bytes: [&'a AtomicU64; 2],
}

impl Direction<'_> {
    fn read_failed(&self, error: io::Error) -> Broken {
        Broken {
            side: self.from.1,
            error,
        }
    }

    fn write_failed(&self, error: io::Error) -> Broken {
        Broken {
            side: self.to.1,
            error,
        }
    }

    /// `n` more bytes went through.
    fn moved(&self, n: usize) {
        for bytes in self.bytes {
            bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.activity.touch();
    }
}

async fn pump(mode: RelayMode, direction: Direction<'_>) -> Result<(), Broken> {
    match mode {
        RelayMode::Copy => {
            copy(&direction, false).await?;
        }
        RelayMode::Splice => splice_pump(&direction).await?,
        RelayMode::Auto => {
            if copy(&direction, true).await? == Copied::Bulk {
                splice_pump(&direction).await?;
            }
        }
    }
    // EOF from `from`: pass the FIN on, keep the other direction open.
    match shutdown_write(direction.to.0) {
        Ok(()) => Ok(()),
        Err(error) if is_gone(&error) => Ok(()),
        Err(error) => Err(direction.write_failed(error)),
    }
}

thread_local! {
    /// Scratch space shared by every connection on this worker thread; never
    /// borrowed across an `.await`.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

enum Step {
    /// Read this many bytes; `pending` holds what the receiver did not take.
    Moved(usize),
    /// Read this many bytes, then the sender's FIN: they went out corked
    /// (`MSG_MORE`), so the FIN that `pump` sends next leaves in the same
    /// segment.
    MovedThenEof(usize),
    Eof,
    NotReady,
}

#[derive(Debug, PartialEq, Eq)]
enum Copied {
    /// `from` sent its FIN.
    Eof,
    /// A read filled the whole buffer and everything read has been written:
    /// time to hand over to splice.
    Bulk,
}

/// The copy engine: returns at EOF from `from`, or (with `stop_on_bulk`)
/// once the direction looks like a bulk transfer.
///
/// Per exchange it makes one read and one write: a short read clears the
/// socket's readiness (`read_drained`), so the next wait sleeps until the
/// kernel reports more instead of a second read finding nothing; and bytes
/// that arrived with the sender's FIN (the readiness says so) are written
/// corked, with the EOF read at once, so that bytes and FIN reach the
/// receiver in one segment, not two.
async fn copy(direction: &Direction<'_>, stop_on_bulk: bool) -> Result<Copied, Broken> {
    let (from, to) = (direction.from.0, direction.to.0);
    let read_failed = |error| direction.read_failed(error);
    let write_failed = |error| direction.write_failed(error);
    // Bytes read but not yet accepted by `to`; empty (no allocation) while
    // the receiver keeps up.
    let mut pending: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut bulk = false;
    let mut eof = false;
    loop {
        while sent < pending.len() {
            to.writable().await.map_err(write_failed)?;
            match to.try_write(&pending[sent..]) {
                Ok(n) => {
                    sent += n;
                    direction.activity.touch();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(write_failed(error)),
            }
        }
        if !pending.is_empty() {
            pending = Vec::new();
            sent = 0;
        }
        if eof {
            return Ok(Copied::Eof);
        }
        if bulk {
            return Ok(Copied::Bulk);
        }
        let ready = from.ready(Interest::READABLE).await.map_err(read_failed)?;
        let step = SCRATCH.with_borrow_mut(|buffer| -> Result<Step, Broken> {
            let closing = ready.is_read_closed();
            let read = if closing {
                from.try_read(buffer)
            } else {
                read_drained(from, buffer)
            };
            let mut n = match read {
                Ok(0) => return Ok(Step::Eof),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Step::NotReady);
                }
                Err(error) => return Err(read_failed(error)),
            };
            // A short read after the FIN was seen: the next read is the EOF
            // (or, rarely, more bytes; an error is met again by the next read).
            let mut then_eof = false;
            if closing && n < buffer.len() {
                match from.try_read(&mut buffer[n..]) {
                    Ok(0) => then_eof = true,
                    Ok(more) => n += more,
                    Err(_) => {}
                }
            }
            let mut written = 0;
            while written < n {
                match send(to, &buffer[written..n], then_eof) {
                    Ok(w) => written += w,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => return Err(write_failed(error)),
                }
            }
            if written < n {
                pending.extend_from_slice(&buffer[written..n]);
            }
            Ok(if then_eof {
                Step::MovedThenEof(n)
            } else {
                Step::Moved(n)
            })
        })?;
        match step {
            Step::Moved(n) => {
                direction.moved(n);
                bulk = stop_on_bulk && n == CHUNK;
            }
            Step::MovedThenEof(n) => {
                direction.moved(n);
                eof = true;
            }
            Step::Eof => return Ok(Copied::Eof),
            Step::NotReady => {}
        }
    }
}

/// Read what `from` has into `buffer`. A read shorter than the buffer took
/// everything queued, so the socket's readiness is cleared with it (as
/// tokio's own `poll_read` does; epoll reports the next bytes or the FIN
/// as a new event).
fn read_drained(from: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    let capacity = buffer.len();
    let mut drained = None;
    let read = from.try_io(Interest::READABLE, || {
        let n = recv(from.as_raw_fd(), buffer, MsgFlags::empty()).map_err(io::Error::from)?;
        if n > 0 && n < capacity {
            // Reported as WouldBlock so that `try_io` clears the readiness;
            // the bytes are kept in `drained`.
            drained = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    drained.map_or(read, Ok)
}

/// Write `bytes` to `to`; with `more`, corked (`MSG_MORE`, which nix does
/// not name): the FIN that
/// follows at once goes out in the same segment.
fn send(to: &TcpStream, bytes: &[u8], more: bool) -> io::Result<usize> {
    if !more {
        return to.try_write(bytes);
    }
    to.try_io(Interest::WRITABLE, || {
        nix::sys::socket::send(
            to.as_raw_fd(),
            bytes,
            MsgFlags::from_bits_retain(nix::libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(io::Error::from)
    })
}

/// The splice engine: socket → pipe → socket, the pipe created on the first
/// readable event so idle connections hold no pipe.
async fn splice_pump(direction: &Direction<'_>) -> Result<(), Broken> {
    let (from, to) = (direction.from.0, direction.to.0);
    let read_failed = |error| direction.read_failed(error);
    let write_failed = |error| direction.write_failed(error);
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    from.readable().await.map_err(read_failed)?;
    let (pipe_out, pipe_in): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .map_err(|errno| read_failed(io::Error::from(errno)))?;
    loop {
        from.readable().await.map_err(read_failed)?;
        let n = match from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, pipe_in.as_fd(), None, CHUNK, flags).map_err(io::Error::from)
        }) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(read_failed(error)),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await.map_err(write_failed)?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_out.as_fd(), None, to.as_fd(), None, left, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(w) => left -= w,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(write_failed(error)),
            }
        }
        direction.moved(n);
    }
}
