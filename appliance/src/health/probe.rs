//! One probe of one target: connect, optionally speak TLS, HTTP or SIP, and
//! say in plain words why it failed. A probe never panics and never retries;
//! the hysteresis core decides what a failure means.
//!
//! HTTP uses hyper's client connection (already in the tree through the web
//! server) rather than a hand-written exchange: status lines, chunked bodies
//! and early closes are parsed by code that is fuzzed and maintained, and the
//! probe only bounds how much body it reads.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::CaBundles;
pub(crate) use super::error::{ProbeError, io_error};
use super::sip;
use super::verify::{Explained, Explaining};
use crate::config::Monitor;
use crate::config::{MonitorKind, Transport};

/// Most body a probe reads looking for `body_contains`.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// A monitor's TLS client config, shared by its targets and replaced in
/// place when its CA bundle is (the next handshake uses the new one; the
/// targets keep their state). An error here fails every probe with its
/// reason.
pub(crate) type TlsSlot = Arc<RwLock<Result<Arc<ClientConfig>, ProbeError>>>;

/// Everything needed to probe one target, built once per (member, monitor).
#[derive(Debug, Clone)]
pub(crate) struct ProbeSpec {
    pub monitor: Arc<Monitor>,
    pub address: SocketAddr,
    /// The member's FQDN: the TLS name unless the monitor sets `sni`.
    pub fqdn: Option<String>,
    /// For TLS-speaking monitors.
    pub tls: Option<TlsSlot>,
}

impl ProbeSpec {
    /// Run one probe under the monitor's timeout.
    pub(crate) async fn run(&self) -> Result<(), ProbeError> {
        let timeout = self.monitor.timeout;
        match tokio::time::timeout(timeout, self.run_untimed()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        }
    }

    async fn run_untimed(&self) -> Result<(), ProbeError> {
        if self.monitor.kind == MonitorKind::Tcp {
            // Close with a reset, as HAProxy's checks do: the member is
            // spared a TIME_WAIT per probe and the prober half the closing
            // handshake. The connection carried nothing.
            let stream = connect(self.address).await?;
            let _ = stream.set_zero_linger();
            return Ok(());
        }
        // The state of a TLS, HTTP or SIP exchange is kilobytes: boxed, it
        // takes memory while a probe runs, not in every idle target's task.
        Box::pin(self.run_exchange()).await
    }

    async fn run_exchange(&self) -> Result<(), ProbeError> {
        let monitor = &*self.monitor;
        match monitor.kind {
            MonitorKind::Tcp => {
                connect(self.address).await?;
                Ok(())
            }
            MonitorKind::Tls => {
                self.tls_connect().await?;
                Ok(())
            }
            MonitorKind::Http => {
                let stream = connect_nodelay(self.address).await?;
                http(monitor, self.address, self.fqdn.as_deref(), stream).await
            }
            MonitorKind::Https => {
                let stream = self.tls_connect().await?;
                http(monitor, self.address, self.fqdn.as_deref(), stream).await
            }
            MonitorKind::SipOptions => match monitor.transport {
                Transport::Udp => sip::probe_udp(monitor, self.address).await,
                Transport::Tcp => {
                    let stream = connect_nodelay(self.address).await?;
                    let local = stream.local_addr().map_err(io_error)?;
                    sip::probe_stream(monitor, self.address, local, stream).await
                }
                Transport::Tls => {
                    let stream = self.tls_connect().await?;
                    let local = stream.get_ref().0.local_addr().map_err(io_error)?;
                    sip::probe_stream(monitor, self.address, local, stream).await
                }
            },
        }
    }

    async fn tls_connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
        let config = match self.tls.as_ref().map(|slot| slot.read()) {
            Some(Ok(config)) => config.clone()?,
            Some(Err(_)) => return Err(ProbeError::Tls("settings unavailable".into())),
            None => return Err(ProbeError::Tls("not configured".into())),
        };
        let name = server_name(&self.monitor, self.fqdn.as_deref(), self.address)?;
        let stream = connect_nodelay(self.address).await?;
        TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|error| tls_error(&error))
    }
}

pub(crate) fn speaks_tls(monitor: &Monitor) -> bool {
    matches!(monitor.kind, MonitorKind::Tls | MonitorKind::Https)
        || (monitor.kind == MonitorKind::SipOptions && monitor.transport == Transport::Tls)
}

/// SNI and the name the certificate is verified against: the monitor's
/// `sni` for every member, else the member's `fqdn`, else its address
/// (which then must be in the certificate's SANs; no SNI is sent for it).
fn server_name(
    monitor: &Monitor,
    fqdn: Option<&str>,
    address: SocketAddr,
) -> Result<ServerName<'static>, ProbeError> {
    match monitor.sni.as_deref().or(fqdn) {
        Some(name) => {
            let name = name.trim_end_matches('.');
            ServerName::try_from(name.to_owned())
                .map_err(|_| ProbeError::Tls(format!("{name:?} is not a valid server name")))
        }
        None => Ok(ServerName::IpAddress(address.ip().into())),
    }
}

async fn connect(address: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(address).await.map_err(io_error)
}

/// A connection that carries a request: probes are one small write and a
/// read, so do not let Nagle hold the write back.
async fn connect_nodelay(address: SocketAddr) -> Result<TcpStream, ProbeError> {
    let stream = connect(address).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn tls_error(error: &io::Error) -> ProbeError {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return ProbeError::Tls(describe_tls(tls));
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof => {
            ProbeError::Tls("connection closed during the handshake".into())
        }
        io::ErrorKind::ConnectionReset => {
            ProbeError::Tls("connection reset during the handshake".into())
        }
        _ => ProbeError::Tls(error.to_string()),
    }
}

fn describe_tls(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<Explained>().is_some() =>
        {
            other.0.to_string()
        }
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".into()
            }
            CertificateError::UnknownIssuer => "certificate signed by an unknown issuer".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate not valid for this server name".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::BadSignature => "certificate has a bad signature".into(),
            other => format!("invalid certificate ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => format!("server sent alert {alert:?}"),
        rustls::Error::NoCertificatesPresented => "server presented no certificate".into(),
        other => other.to_string(),
    }
}

/// The rustls client config of a TLS-speaking monitor: roots from its
/// `ca_bundle` (in `bundles`), its `ca_file`, or the bundled web PKI roots,
/// with refusals explained (`verify`); or no verification when
/// `tls_verify = false`.
pub(crate) fn client_config(
    monitor: &Monitor,
    bundles: &CaBundles,
) -> Result<Arc<ClientConfig>, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| ProbeError::Tls(error.to_string()))?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if !monitor.tls_verify {
        Arc::new(NoVerification(Arc::clone(&provider)))
    } else {
        let (roots, trusted) = roots(monitor, bundles)?;
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| {
                    ProbeError::Tls(format!("cannot verify with {trusted}: {error}"))
                })?;
        Arc::new(Explaining::new(inner, trusted))
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    if monitor.kind == MonitorKind::Https {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Arc::new(config))
}

/// The trust anchors of a verifying monitor and how reasons name them.
fn roots(
    monitor: &Monitor,
    bundles: &CaBundles,
) -> Result<(rustls::RootCertStore, String), ProbeError> {
    if let Some(name) = &monitor.ca_bundle {
        // Validation keeps this from happening: a bundle in use cannot be
        // deleted, and a config cannot name one that is not uploaded.
        let bundle = bundles
            .get(name)
            .ok_or_else(|| ProbeError::Tls(format!("CA bundle {name:?} is not uploaded")))?;
        return Ok((bundle.roots(), format!("CA bundle {name:?}")));
    }
    let mut roots = rustls::RootCertStore::empty();
    match &monitor.ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let ca_error = |reason: String| ProbeError::CaFile {
                path: path.clone(),
                reason,
            };
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|error| ca_error(error.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|error| ca_error(error.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|error| ca_error(describe_tls(&error)))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no certificates in it".into()));
            }
            Ok((roots, format!("CA file {path}")))
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Ok((roots, "the public web roots".to_owned()))
        }
    }
}

/// `tls_verify = false`: the handshake must still complete (signatures are
/// checked), but any certificate is accepted. (Public for the end-to-end
/// tests, which talk to the appliance's self-signed certificate.)
#[derive(Debug)]
pub struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl NoVerification {
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self(provider)
    }
}

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// GET `path` and check the status and, optionally, the body.
async fn http<S>(
    monitor: &Monitor,
    address: SocketAddr,
    fqdn: Option<&str>,
    stream: S,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |error: hyper::Error| ProbeError::Http(error.to_string());
    // The TLS name (for https) unless `host` says otherwise, so the Host
    // header and SNI agree.
    let tls_name = match monitor.kind {
        MonitorKind::Https => monitor.sni.as_deref().or(fqdn),
        _ => None,
    };
    let host = match (&monitor.host, tls_name) {
        (Some(host), _) => host.clone(),
        (None, Some(name)) => name.trim_end_matches('.').to_owned(),
        (None, None) => address.to_string(),
    };
    let request = hyper::Request::get(monitor.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "poolgate-health")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| ProbeError::Http(error.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status().as_u16();
        if !monitor.expect_status.contains(&status) {
            return Err(ProbeError::HttpStatus(status));
        }
        let Some(needle) = &monitor.body_contains else {
            return Ok(());
        };
        let mut body = response.into_body();
        let mut seen = Vec::new();
        while seen.len() < MAX_BODY {
            let Some(frame) = body.frame().await else {
                break;
            };
            if let Ok(data) = frame.map_err(http_error)?.into_data() {
                seen.extend_from_slice(&data);
            }
            if contains(&seen, needle.as_bytes()) {
                return Ok(());
            }
        }
        Err(ProbeError::BodyMismatch {
            status,
            needle: needle.clone(),
        })
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = &mut exchange => result,
        // The connection ending first still leaves the response in the
        // exchange's channel (or an error that explains why not).
        _ = &mut connection => exchange.await,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reasons_read_as_plain_words() {
        assert_eq!(ProbeError::Refused.to_string(), "connection refused");
        assert_eq!(
            ProbeError::Timeout(Duration::from_millis(500)).to_string(),
            "timeout after 500 ms"
        );
        assert_eq!(ProbeError::HttpStatus(503).to_string(), "HTTP 503");
        assert_eq!(
            ProbeError::SipStatus {
                code: 486,
                phrase: "Busy Here".into()
            }
            .to_string(),
            "SIP 486 Busy Here"
        );
        assert_eq!(
            ProbeError::Tls(describe_tls(&rustls::Error::InvalidCertificate(
                CertificateError::Expired
            )))
            .to_string(),
            "TLS: certificate expired"
        );
    }

    #[test]
    fn the_tls_name_is_sni_else_the_members_fqdn_else_its_address() {
        let config =
            crate::config::from_toml(include_str!("../../../examples/lync-pool.toml"), "example")
                .expect("example");
        let mut monitor = config.monitors[0].clone();
        let address = SocketAddr::from(([127, 0, 0, 11], 5061));
        let name = |monitor: &Monitor, fqdn: Option<&str>| {
            server_name(monitor, fqdn, address).expect("a name")
        };
        assert_eq!(
            name(&monitor, Some("fe01.contoso.test.")),
            ServerName::try_from("fe01.contoso.test").expect("dns name")
        );
        assert_eq!(
            name(&monitor, None),
            ServerName::IpAddress(address.ip().into())
        );
        monitor.sni = Some("pool01.contoso.test".into());
        assert_eq!(
            name(&monitor, Some("fe01.contoso.test")),
            ServerName::try_from("pool01.contoso.test").expect("dns name")
        );
    }

    #[test]
    fn body_search_spans_frames() {
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"world"));
        assert!(contains(b"", b""));
    }
}
