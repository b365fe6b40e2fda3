//! The sync link's own identity: a key pair and self-signed certificate
//! kept in `tls/ha-sync.pem` (owner-only, certificate and key in one file),
//! separate from the admin certificate. The peer pins this certificate, so
//! renewing the generated admin certificate, or installing one of the
//! admin's, leaves the pair's link as it is.
//!
//! Made once: for an appliance paired before it existed (whose peer pinned
//! the admin certificate), from the admin certificate and key in use then,
//! so the stored pin keeps working; otherwise a new key pair. Never
//! renewed: the pin is the trust, not its validity dates (the verifiers in
//! `pin` check the fingerprint and the handshake signature only), and the
//! certificate is valid until 4096 so that no tool calls it expired.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::certs::{Certificates, TlsError};

/// Under the data directory.
pub(crate) const FILE: &str = "tls/ha-sync.pem";

/// The identity in `data_dir`, made now if there is none: from the admin
/// certificate when `paired` (the peer pinned that one), else new.
/// Blocking (files).
pub(crate) fn load_or_create(
    data_dir: &Path,
    appliance_id: &str,
    certificates: &Certificates,
    paired: bool,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let path = data_dir.join(FILE);
    let io = |source| TlsError::Io {
        path: path.clone(),
        source,
    };
    if !path.exists() {
        let pem = if paired {
            certificates.current_pem()?
        } else {
            generate(appliance_id)?
        };
        crate::certs::write_private(&path, pem.as_bytes()).map_err(io)?;
        tracing::info!(file = %path.display(), from_admin_certificate = paired, "Made the HA sync identity");
    }
    let pem = std::fs::read_to_string(&path).map_err(io)?;
    let pair = crate::certs::pinned_pair(&pem).map_err(|message| TlsError::Pem {
        path: path.clone(),
        message,
    })?;
    Ok(Arc::new(pair))
}

/// A new key pair and a self-signed certificate naming the appliance.
fn generate(appliance_id: &str) -> Result<String, TlsError> {
    use rcgen::DnType;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("poolgate HA sync {appliance_id}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "poolgate");
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// SHA-256 of the identity's certificate: what the peer pins.
pub(crate) fn fingerprint(identity: &CertifiedKey) -> String {
    identity
        .cert
        .first()
        .map(|der| super::protocol::fingerprint(der.as_ref()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tls")).expect("tls dir");
        let identity = crate::certs::Identity::of_host("a1", &["127.0.0.1".parse().expect("ip")]);
        let certificates = Certificates::load_or_create(dir.path(), &identity).expect("admin");
        let first = load_or_create(dir.path(), "a1", &certificates, false).expect("made");
        let again = load_or_create(dir.path(), "a1", &certificates, true).expect("kept");
        assert_eq!(fingerprint(&first), fingerprint(&again));
        let admin = super::super::protocol::fingerprint(certificates.current().cert[0].as_ref());
        assert_ne!(fingerprint(&first), admin, "its own key pair");
    }

    #[test]
    fn a_pair_made_before_keeps_the_admin_certificate_it_pinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = crate::certs::Identity::of_host("a1", &["127.0.0.1".parse().expect("ip")]);
        let certificates = Certificates::load_or_create(dir.path(), &identity).expect("admin");
        let made = load_or_create(dir.path(), "a1", &certificates, true).expect("made");
        let admin = super::super::protocol::fingerprint(certificates.current().cert[0].as_ref());
        assert_eq!(fingerprint(&made), admin);
    }
}
