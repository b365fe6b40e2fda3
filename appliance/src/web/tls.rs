//! HTTPS for the admin listener. On first start a self-signed certificate is
//! generated (rcgen) and kept in the data directory; an installed certificate
//! in the same place replaces it. One port serves both: a connection whose
//! first byte is a TLS handshake gets HTTPS, anything else gets a plain-HTTP
//! redirect to the HTTPS URL and nothing more.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const CERT_FILE: &str = "tls/admin-cert.pem";
pub const KEY_FILE: &str = "tls/admin-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable PEM certificate or key: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The admin certificate and key from `data_dir`, generated on first start.
pub fn load_or_create(
    data_dir: &Path,
    names: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        let generated = rcgen::generate_simple_self_signed(names)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        let dir = cert_path.parent().expect("certificate path has a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        write_private(&cert_path, generated.cert.pem().as_bytes()).map_err(io(&cert_path))?;
        tracing::info!(certificate = %cert_path.display(), "Generated a self-signed admin certificate");
    }
    let pem = |path: &Path, message: String| TlsError::Pem {
        path: path.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| pem(&cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(&cert_path, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem(&key_path, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Write a file only its owner can read, durably, replacing it atomically.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Serve `router` over HTTPS on `listener` until `shutdown`; then stop
/// accepting, ask open connections to finish, and return once they have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let local = listener.local_addr().ok();
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "Admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tracker.spawn(async move {
            if let Err(reason) = connection(stream, peer, local, acceptor, router, shutdown).await {
                tracing::debug!(%peer, reason, "Admin connection ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Drive a hyper connection; on shutdown let the request in flight finish.
/// (A macro because the auto builder's two connection types share no trait.)
macro_rules! finish {
    ($conn:expr, $shutdown:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result.map_err(|_| "connection error"),
            () = $shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await.map_err(|_| "connection error")
            }
        }
    }};
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), &'static str> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return Err("no request"),
    }
    let builder = auto::Builder::new(TokioExecutor::new());
    if first[0] != 0x16 {
        let service =
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| async move {
                Ok::<_, std::convert::Infallible>(redirect_to_https(&request, local))
            });
        return finish!(
            builder.serve_connection(TokioIo::new(stream), service),
            shutdown
        );
    }
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out")?
        .map_err(|_| "TLS handshake failed")?;
    let service = hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
        router,
        move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    finish!(
        builder.serve_connection_with_upgrades(TokioIo::new(tls), service),
        shutdown
    )
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
