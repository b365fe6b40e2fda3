//! Binding a listener: one error type naming the service and address, and
//! one `listening` log line per bound socket (tests read it to learn the
//! port a `:0` address got).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};

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
    listening(service, address, TcpListener::bind(address).await)
}

/// Bind a UDP socket and log its `listening` line.
pub(crate) async fn bind_udp(service: &str, address: SocketAddr) -> Result<UdpSocket, BindError> {
    listening(service, address, UdpSocket::bind(address).await)
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
