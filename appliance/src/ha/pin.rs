//! Certificate pinning for the sync link: TLS configs that present the
//! sync identity (`identity`) and whose verifiers accept
//! exactly the pinned peer certificate (by SHA-256 of its DER), in both
//! directions, and nothing else. There is no CA: the pin is the trust,
//! made on first use during pairing and protected by the pairing code
//! (`protocol::proof`).
//!
//! The listener's verifier accepts an unpinned client certificate only while
//! a pairing code is open, and then the link accepts only a `join`
//! (`link`). A client without a certificate is always refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::protocol::fingerprint;

/// The ALPN protocol of the sync link.
pub(crate) const ALPN: &[u8] = b"poolgate-ha/1";

/// What the listener accepts: the pinned peer, or anyone while pairing.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    pinned: RwLock<Option<String>>,
    pairing_open: AtomicBool,
}

impl Pins {
    pub(crate) fn set(&self, fingerprint: Option<String>) {
        *self.pinned.write().unwrap_or_else(|p| p.into_inner()) = fingerprint;
    }

    pub(crate) fn pinned(&self) -> Option<String> {
        self.pinned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_pairing_open(&self, open: bool) {
        self.pairing_open.store(open, Ordering::Relaxed);
    }

    fn accepts(&self, fp: &str) -> bool {
        self.pinned().as_deref() == Some(fp) || self.pairing_open.load(Ordering::Relaxed)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's config: presents the appliance certificate, demands a
/// client certificate and checks it against `pins`.
pub(crate) fn server_config(
    identity: &Arc<CertifiedKey>,
    pins: Arc<Pins>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(ClientPin {
        pins,
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Identity(Arc::clone(identity))));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The dialing side's config: presents the appliance certificate as client
/// certificate and accepts exactly `expected` (or, when joining, any
/// certificate, which it records in `seen` to be pinned once the peer has
/// proved it knows the code).
pub(crate) fn client_config(
    identity: &Arc<CertifiedKey>,
    expected: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(ServerPin {
        expected,
        seen,
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Identity(Arc::clone(identity))));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The sync identity (`identity`), presented on both ends of the link.
#[derive(Debug)]
struct Identity(Arc<CertifiedKey>);

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct ServerPin {
    expected: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

fn not_pinned() -> Error {
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

impl ServerCertVerifier for ServerPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let fp = fingerprint(end_entity.as_ref());
        if self
            .expected
            .as_ref()
            .is_some_and(|expected| *expected != fp)
        {
            return Err(not_pinned());
        }
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct ClientPin {
    pins: Arc<Pins>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for ClientPin {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if self.pins.accepts(&fingerprint(end_entity.as_ref())) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(not_pinned())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
