//! HTTPS for the admin listener, with the appliance certificate from
//! `crate::certs`. One port serves both HTTP and HTTPS: a connection whose
//! first byte is a TLS handshake gets HTTPS, anything else gets a plain-HTTP
//! redirect to the HTTPS URL and nothing more.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::net::{Activity, Conn, IdleMarker, Listener, NetError, Timeout, Tracked};

/// Serve `router` over HTTPS on `listener` until `shutdown`; then stop
/// accepting, ask open connections to finish, and return once they have.
/// The listener's gate caps connections; each connection must finish its
/// TLS handshake, then send its first request's headers, within the
/// gate's deadlines, and is closed once idle (nothing moving, no request
/// being handled) for the idle timeout, so an open SSE stream, which sends
/// at least every few seconds, is never cut. Once asked to close (shutdown,
/// or evicted while idle), a connection has [`CLOSE_TIME`] to finish the
/// request it is handling and is then dropped: an SSE stream never ends on
/// its own and would otherwise keep `serve` and its gate slot alive.
pub(crate) async fn serve(
    mut listener: Listener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let local = listener.local_addr().ok();
    let tracker = TaskTracker::new();
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => break,
            conn = listener.accept() => conn,
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tracker.spawn(async move {
            let peer = conn.peer;
            if let Err(reason) = connection(conn, local, acceptor, router, shutdown).await {
                tracing::debug!(%peer, reason, "Admin connection ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Most of a request body read and discarded after its response is ready
/// but before it is sent (a request refused before its body was read): a
/// client still sending would otherwise see its stream reset (HTTP/2) or
/// its connection reset (HTTP/1.1) and could lose the response. Past
/// this, the response goes out and the rest is refused with a reset
/// (`NO_ERROR` on HTTP/2, as RFC 9113 §8.1 allows).
const DRAIN_LIMIT: usize = 16 << 20;
/// How long that draining may take.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// How long a connection asked to close may take to finish its requests
/// before it is dropped: the default grace period of a shutdown
/// (`--grace-period-s`), and enough for any admin request but a stream.
const CLOSE_TIME: Duration = Duration::from_secs(10);

/// Drive a hyper connection under the gate's deadlines; on shutdown let the
/// request in flight finish within [`CLOSE_TIME`]. (A macro because the
/// HTTP/1 and HTTP/2 connection types share no trait for
/// `graceful_shutdown`.)
macro_rules! drive {
    ($conn:expr, $slot:expr, $activity:expr, $first_request_by:expr, $shutdown:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let limits = $slot.limits();
        let timed_out = |result: Result<(), hyper::Error>| match result {
            Err(error) if error.is_timeout() => {
                $slot.timed_out(Timeout::Header);
                Err("request headers timed out")
            }
            Err(_) => Err("connection error"),
            Ok(()) => Ok(()),
        };
        // Past `CLOSE_TIME` the connection is dropped, whatever it is doing.
        let closed = |finished: Result<Result<(), hyper::Error>, tokio::time::error::Elapsed>,
                      cut: &'static str| match finished {
            Ok(result) => timed_out(result),
            Err(_) => Err(cut),
        };
        tokio::select! {
            result = conn.as_mut() => timed_out(result),
            () = $activity.idle_for(limits.idle_timeout) => {
                $slot.timed_out(Timeout::Idle);
                Err("idle")
            }
            () = $activity.no_request_by($first_request_by) => {
                $slot.timed_out(Timeout::Header);
                Err("no request in time")
            }
            () = $shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                closed(
                    tokio::time::timeout(CLOSE_TIME, conn.as_mut()).await,
                    "cut at close with a request still running",
                )
            }
            // Closed to make room while idle between requests; a request
            // that began meanwhile still finishes, within `CLOSE_TIME`.
            () = $slot.evicted() => {
                conn.as_mut().graceful_shutdown();
                closed(
                    tokio::time::timeout(CLOSE_TIME, conn.as_mut()).await,
                    "cut after eviction with a request still running",
                )
            }
        }
    }};
}

async fn connection(
    conn: Conn,
    local: Option<SocketAddr>,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), &'static str> {
    let Conn { stream, peer, slot } = conn;
    let reached = stream.local_addr().ok();
    let limits = slot.limits();
    let accepted = tokio::time::Instant::now();
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Err(_) => {
            slot.timed_out(Timeout::Header);
            return Err("no request");
        }
        Ok(_) => return Err("no request"),
    }
    let activity = Arc::new(Activity::default());
    let timer = TokioTimer::new();
    if first[0] != 0x16 {
        // Plain HTTP gets one redirect and nothing else: HTTP/1 only, one
        // request, headers within the same deadline as over TLS.
        let counted = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let _request = InFlight::start(&counted, None);
            std::future::ready(Ok::<_, std::convert::Infallible>(redirect_to_https(
                &request, local,
            )))
        });
        let io = TokioIo::new(Tracked::new(stream, Arc::clone(&activity), false));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(timer)
            .header_read_timeout(limits.header_timeout)
            .keep_alive(false);
        return drive!(
            builder.serve_connection(io, service),
            slot,
            activity,
            accepted + limits.header_timeout,
            shutdown
        );
    }
    let tls = crate::net::accept::tls_handshake(&acceptor, stream, peer, &slot, &activity)
        .await
        .map_err(|error| match error {
            NetError::HandshakeTimeout => "TLS handshake timed out",
            NetError::Handshake(_) => "TLS handshake failed",
        })?;
    let first_request_by = tokio::time::Instant::now() + limits.header_timeout;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let counted = Arc::clone(&activity);
    let marker = slot.marker();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        let in_flight = InFlight::start(&counted, Some(&marker));
        async move {
            let _in_flight = in_flight;
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            if let Some(reached) = reached {
                parts.extensions.insert(super::ReachedAt(reached));
            }
            // A client that asked to wait for `100 Continue` has sent no
            // body yet; reading it would ask for the body the answer makes
            // needless.
            let waits_for_continue = parts
                .headers
                .get(hyper::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let body = KeptBody::new(body);
            let request = hyper::Request::from_parts(parts, axum::body::Body::new(body.clone()));
            let response = tower::ServiceExt::oneshot(router, request).await;
            if !waits_for_continue || body.was_read() {
                body.drain(DRAIN_LIMIT, DRAIN_TIME).await;
            }
            response
        }
    });
    let io = TokioIo::new(tls);
    // The protocol is the one TLS negotiated (ALPN), so each has its own
    // deadlines from the first byte: HTTP/1 its header-read timeout, HTTP/2
    // the first-request and idle deadlines.
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(timer);
        drive!(
            builder.serve_connection(io, service),
            slot,
            activity,
            first_request_by,
            shutdown
        )
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(timer)
            .header_read_timeout(limits.header_timeout);
        drive!(
            builder.serve_connection(io, service).with_upgrades(),
            slot,
            activity,
            first_request_by,
            shutdown
        )
    }
}

/// Counts one request as in flight on its connection while it lives.
/// With a marker, the connection is marked busy while a request is handled
/// and idle (evictable at the cap) once its last request ended.
struct InFlight(Arc<Activity>, Option<IdleMarker>);

impl InFlight {
    fn start(activity: &Arc<Activity>, marker: Option<&IdleMarker>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(marker) = marker {
            marker.busy();
        }
        Self(Arc::clone(activity), marker.cloned())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The last one out marks the connection idle, unless (checked under
        // the gate's lock) a request began meanwhile: an HTTP/2 stream
        // that started between this decrement and the marking.
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(marker) = &self.1
        {
            marker.idle_unless_in_flight(&self.0.in_flight);
        }
    }
}

/// A request body the handler reads through, while the connection keeps
/// hold of it: whatever the handler left unread can be drained after it
/// answered (see `DRAIN_LIMIT`).
#[derive(Clone)]
struct KeptBody(Arc<Kept>);

struct Kept {
    body: std::sync::Mutex<Incoming>,
    /// Whether the handler asked for any of the body.
    read: std::sync::atomic::AtomicBool,
}

impl KeptBody {
    fn new(body: Incoming) -> Self {
        Self(Arc::new(Kept {
            body: std::sync::Mutex::new(body),
            read: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Incoming> {
        self.0.body.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn was_read(&self) -> bool {
        self.0.read.load(Ordering::Relaxed)
    }

    /// Read and discard up to `limit` bytes within `time`.
    async fn drain(&self, limit: usize, time: Duration) {
        use hyper::body::Body as _;
        let drained = tokio::time::timeout(time, async {
            let mut read = 0;
            while !self.lock().is_end_stream() && read <= limit {
                let frame = std::future::poll_fn(|cx| Pin::new(&mut *self.lock()).poll_frame(cx));
                match frame.await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, bytes::Bytes::len),
                    Some(Err(_)) | None => break,
                }
            }
            read
        })
        .await;
        if let Ok(read) = drained
            && read > 0
        {
            tracing::debug!(bytes = read, "Unread request body drained");
        }
    }
}

impl hyper::body::Body for KeptBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0.read.store(true, Ordering::Relaxed);
        Pin::new(&mut *self.lock()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.lock().is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.lock().size_hint()
    }
}

fn redirect_to_https(
    request: &hyper::Request<Incoming>,
    local: Option<SocketAddr>,
) -> hyper::Response<String> {
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_owned)
        .or_else(|| local.map(|addr| addr.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!(
        "https://{host}{}",
        if path.starts_with('/') { path } else { "/" }
    );
    hyper::Response::builder()
        .status(hyper::StatusCode::PERMANENT_REDIRECT)
        .header(hyper::header::LOCATION, location)
        .header(hyper::header::CONNECTION, "close")
        .body("Use HTTPS.\n".to_owned())
        .expect("a redirect with a sanitised location is a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Limits, Registry};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server config with a fresh self-signed certificate for
    /// `localhost`, and a connector that trusts it.
    fn tls_pair() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let cert = generated.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            Arc::new(server),
            tokio_rustls::TlsConnector::from(Arc::new(client)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_listener_drops_a_request_that_never_ends() {
        let (server_tls, connector) = tls_pair();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let started = Arc::new(std::sync::Mutex::new(Some(started)));
        // Like an SSE stream: the request is never done on its own.
        let router = Router::new().route(
            "/stream",
            axum::routing::get(move || {
                if let Some(started) = started.lock().expect("lock").take() {
                    let _ = started.send(());
                }
                std::future::pending::<&'static str>()
            }),
        );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = tcp.local_addr().expect("address");
        let gate = Registry::default().gate("admin", Limits::admin());
        let listener = Listener::new(tcp, Arc::clone(&gate));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, server_tls, shutdown.clone()));

        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, stream).await.expect("handshake");
        tls.write_all(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("request");
        running.await.expect("the handler runs");
        shutdown.cancel();
        tokio::time::timeout(CLOSE_TIME * 6, server)
            .await
            .expect("serve returns though the request never ended")
            .expect("serve");
        assert_eq!(
            gate.stats.open.load(Ordering::Relaxed),
            0,
            "its slot is released"
        );
        let mut rest = Vec::new();
        let closed = tls.read_to_end(&mut rest).await;
        assert!(
            closed.is_err() || rest.is_empty(),
            "no response to a dropped request: {rest:?}"
        );
    }
}
