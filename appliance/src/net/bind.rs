//! Binding a listener: one error type naming the service and address, and
//! one `listening` log line per bound socket (tests read it to learn the
//! port a `:0` address got).
//!
//! Every listener of poolgate (admin, DNS, SIP, virtual services) is bound
//! by [`tcp_listener`] or [`udp_socket`]. When poolgate owns its addresses
//! (`run --manage-addresses`, [`allow_nonlocal`]), they bind with
//! `IP_FREEBIND`: a listener for an address that is about to be added (a
//! VIP the same config brings) binds at once and receives traffic from the
//! moment the address is on the interface, instead of failing and being
//! tried again a second later. Otherwise an address the host does not have
//! is a bind error, named and retried, as an admin would expect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

/// Whether listeners may bind addresses the host does not hold (yet).
static NONLOCAL: AtomicBool = AtomicBool::new(false);
/// The accept queue of a TCP listener (what tokio's `bind` uses).
const BACKLOG: i32 = 1024;
/// `SO_RCVBUF` / `SO_SNDBUF` asked for a UDP listener (DNS, SIP): 1 MiB, as
/// NSD sets. The kernel default (208 KiB, about 270 small datagrams) drops a
/// burst of a few hundred queries before the worker reads them; the kernel
/// caps the request at `net.core.rmem_max` / `wmem_max` without an error.
const UDP_BUFFER: usize = 1 << 20;

/// Let listeners bind addresses the host does not hold yet: set once at
/// start when poolgate itself adds its addresses.
pub(crate) fn allow_nonlocal(allow: bool) {
    NONLOCAL.store(allow, Ordering::Relaxed);
}

fn socket(
    address: SocketAddr,
    kind: Type,
    protocol: Protocol,
    reuse_port: bool,
) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if NONLOCAL.load(Ordering::Relaxed) {
        match address {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
    }
    socket.bind(&address.into())?;
    Ok(socket)
}

/// A TCP listener on `address`, as `TcpListener::bind` makes it
/// (`SO_REUSEADDR`, a backlog of 1024), with `IP_FREEBIND` when allowed.
pub(crate) fn tcp_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket(address, Type::STREAM, Protocol::TCP, false)?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// `count` TCP listeners on one `address` (as [`tcp_listener`] makes them),
/// one for each proxy worker runtime to accept on. More than one share the
/// address through `SO_REUSEPORT`, and the kernel spreads new connections
/// over them by a hash of the client's address and port. A second process
/// can join the group only under the same user and with `SO_REUSEPORT`
/// too; anything else holding the port is a bind error, as with one
/// listener. A `:0` port is the one the first listener got. The listeners
/// are std sockets: each is registered with the runtime that accepts on it.
pub(crate) fn tcp_listeners(
    address: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut at = address;
    for _ in 0..count.max(1) {
        let socket = socket(at, Type::STREAM, Protocol::TCP, count > 1)?;
        socket.listen(BACKLOG)?;
        let listener = std::net::TcpListener::from(socket);
        at = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A UDP socket on `address`, with `IP_FREEBIND` when allowed and 1 MiB
/// socket buffers each way (best effort: a smaller buffer still works).
pub(crate) fn udp_socket(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket(address, Type::DGRAM, Protocol::UDP, false)?;
    if let Err(error) = socket
        .set_recv_buffer_size(UDP_BUFFER)
        .and_then(|()| socket.set_send_buffer_size(UDP_BUFFER))
    {
        tracing::warn!(%address, %error, "Cannot size the UDP socket buffers; the defaults stay");
    }
    UdpSocket::from_std(socket.into())
}

/// How many worker tasks share one UDP socket (DNS, SIP): one per core the
/// process may run on, at most 4. One task answers on one core at a time.
pub(crate) fn udp_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// A socket that could not be bound (or whose bound address cannot be read).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {service} on {address}: {source}")]
pub struct BindError {
    /// The service label (`admin`, `dns-udp`, a virtual service's name).
    pub service: String,
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl BindError {
    pub(crate) fn new(service: &str, address: SocketAddr, source: std::io::Error) -> Self {
        Self {
            service: service.to_owned(),
            address,
            source,
        }
    }
}

/// Something bound to a local address.
pub(crate) trait Bound {
    fn local(&self) -> std::io::Result<SocketAddr>;
}

impl Bound for TcpListener {
    fn local(&self) -> std::io::Result<SocketAddr> {
        self.local_addr()
    }
}

impl Bound for UdpSocket {
    fn local(&self) -> std::io::Result<SocketAddr> {
        self.local_addr()
    }
}

/// Log the one `listening` line of a socket bound for `service` at
/// `address`, or turn the bind's failure into a `BindError`.
pub(crate) fn listening<T: Bound>(
    service: &str,
    address: SocketAddr,
    bound: std::io::Result<T>,
) -> Result<T, BindError> {
    let socket = bound.map_err(|source| BindError::new(service, address, source))?;
    let local = socket
        .local()
        .map_err(|source| BindError::new(service, address, source))?;
    tracing::info!(service, address = %local, "listening");
    Ok(socket)
}

/// Bind a TCP listener and log its `listening` line.
pub(crate) async fn bind_tcp(service: &str, address: SocketAddr) -> Result<TcpListener, BindError> {
    listening(service, address, tcp_listener(address))
}

/// Bind a UDP socket and log its `listening` line.
pub(crate) async fn bind_udp(service: &str, address: SocketAddr) -> Result<UdpSocket, BindError> {
    listening(service, address, udp_socket(address))
}

/// How long a listener that could not bind waits before it is tried again
/// (another process may free the port, or an address may appear).
pub(crate) const BIND_RETRY: Duration = Duration::from_secs(1);

/// Resolves when binds that failed are due to be tried again; never while
/// none has failed.
pub(crate) async fn bind_retry_due(any_failed: bool) {
    if !any_failed {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(BIND_RETRY).await;
}
