//! CA bundles: the customer's own CA certificates, uploaded by name
//! (`/api/v1/ca-bundles/{name}`) and chosen per monitor with `ca_bundle`, so
//! TLS health checks verify Front Ends whose certificates come from an
//! internal CA. Pure: parsing and checking a bundle, no store, no sockets.
//!
//! Invariants:
//! * A [`CaBundle`] holds only what parsed: at least one certificate, every
//!   PEM section a CERTIFICATE, no private key, no end-entity certificate
//!   (basicConstraints with cA false), and each one accepted by rustls as a
//!   trust anchor. Anything else is refused with the reason, naming the
//!   certificate by its position and subject.
//! * A bundle is bounded: [`MAX_PEM_BYTES`] of text, [`MAX_CERTIFICATES`]
//!   certificates.
//! * The set of bundles ([`CaBundles`]) is owned by the control task and
//!   published with the pool view, so probes see a replaced bundle from
//!   their next handshake on.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde::Serialize;

/// Most PEM text one bundle may have: hundreds of RSA-4096 CAs fit.
pub(crate) const MAX_PEM_BYTES: usize = 512 * 1024;
/// Most certificates in one bundle.
pub(crate) const MAX_CERTIFICATES: usize = 200;
/// Longest bundle name.
const MAX_NAME: usize = 64;

/// Every bundle, by name.
pub type CaBundles = BTreeMap<String, Arc<CaBundle>>;

/// One uploaded, checked bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub name: String,
    /// The text as uploaded (what is stored and returned).
    pub pem: String,
    pub certificates: Vec<CertificateDer<'static>>,
    pub info: Vec<CaCertificateInfo>,
}

/// What the UI and the API show of one certificate in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CaCertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256_fingerprint: String,
}

/// A bundle as the list shows it (without its PEM text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CaBundleInfo {
    pub name: String,
    pub certificates: Vec<CaCertificateInfo>,
    /// Monitors whose `ca_bundle` names it (it cannot be deleted meanwhile).
    pub used_by: Vec<String>,
}

impl CaBundle {
    pub(crate) fn summary(&self, used_by: Vec<String>) -> CaBundleInfo {
        CaBundleInfo {
            name: self.name.clone(),
            certificates: self.info.clone(),
            used_by,
        }
    }

    /// The trust anchors for a verifier.
    pub(crate) fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // Every certificate was added once already, in `parse`.
        let (_added, _ignored) = roots.add_parsable_certificates(self.certificates.iter().cloned());
        roots
    }
}

/// Why a name is not a bundle name; `Ok` if it is one.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a CA bundle name: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// Check `pem` and build the bundle `name`; the error says what is wrong.
pub(crate) fn parse(name: &str, pem: &str) -> Result<CaBundle, String> {
    check_name(name)?;
    if pem.len() > MAX_PEM_BYTES {
        return Err(format!(
            "larger than {} KiB; is this a PEM file of CA certificates?",
            MAX_PEM_BYTES / 1024
        ));
    }
    // The PEM reader skips sections it does not know (such as an encrypted
    // key): look for keys in the text itself too.
    if pem.contains("PRIVATE KEY-----") {
        return Err(
            "contains a private key; upload only the CA certificates (never a key)".to_owned(),
        );
    }
    let mut certificates = Vec::new();
    let mut info = Vec::new();
    for (index, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()).enumerate() {
        let position = index + 1;
        let (kind, der) =
            section.map_err(|error| format!("PEM section {position} does not parse: {error}"))?;
        if kind != SectionKind::Certificate {
            return Err(format!(
                "PEM section {position} is a {kind:?}, not a CERTIFICATE; upload only CA certificates"
            ));
        }
        if certificates.len() == MAX_CERTIFICATES {
            return Err(format!("more than {MAX_CERTIFICATES} certificates"));
        }
        let der = CertificateDer::from(der);
        info.push(describe(position, &der)?);
        let mut probe = rustls::RootCertStore::empty();
        probe.add(der.clone()).map_err(|error| {
            format!(
                "certificate {position} ({}) cannot be a trust anchor: {error}",
                info[index].subject
            )
        })?;
        certificates.push(der);
    }
    if certificates.is_empty() {
        return Err(
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----); upload the CA certificates as PEM text"
                .to_owned(),
        );
    }
    Ok(CaBundle {
        name: name.to_owned(),
        pem: pem.to_owned(),
        certificates,
        info,
    })
}

/// One certificate's facts, refusing an end-entity certificate.
fn describe(position: usize, der: &CertificateDer<'_>) -> Result<CaCertificateInfo, String> {
    use sha2::Digest;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|error| format!("certificate {position} is not an X.509 certificate: {error}"))?;
    let subject = cert.subject().to_string();
    if let Ok(Some(constraints)) = cert.basic_constraints()
        && !constraints.value.ca
    {
        return Err(format!(
            "certificate {position} ({subject}) is not a CA certificate (basicConstraints cA is false); upload the CA that issued it"
        ));
    }
    let fingerprint = sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CaCertificateInfo {
        subject,
        issuer: cert.issuer().to_string(),
        not_before: date_time(cert.validity().not_before.timestamp()),
        not_after: date_time(cert.validity().not_after.timestamp()),
        sha256_fingerprint: fingerprint,
    })
}

/// Unix seconds as RFC 3339.
fn date_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(crate::clock::rfc3339)
        .unwrap_or_else(|_| unix.to_string())
}

/// The monitors of `config` whose `ca_bundle` is `name`.
pub(crate) fn users(config: &crate::config::Config, name: &str) -> Vec<String> {
    config
        .monitors
        .iter()
        .filter(|m| m.ca_bundle.as_deref() == Some(name))
        .map(|m| m.name.clone())
        .collect()
}

/// A field error for every monitor of `config` whose `ca_bundle` names no
/// bundle in `bundles` (the check the control task adds to validation).
pub(crate) fn missing(
    config: &crate::config::Config,
    bundles: &CaBundles,
) -> Vec<crate::config::FieldError> {
    use crate::config::path::FieldPath;
    config
        .monitors
        .iter()
        .enumerate()
        .filter_map(|(index, monitor)| {
            let name = monitor.ca_bundle.as_ref()?;
            if bundles.contains_key(name) {
                return None;
            }
            let known: Vec<&str> = bundles.keys().map(String::as_str).collect();
            let message = if known.is_empty() {
                format!(
                    "refers to CA bundle {name:?}, but none is uploaded; upload it first (System, CA bundles, or PUT /api/v1/ca-bundles/{name})"
                )
            } else {
                format!(
                    "refers to CA bundle {name:?}, which is not uploaded; uploaded: {}",
                    known.join(", ")
                )
            };
            Some(crate::config::FieldError {
                path: FieldPath::root().item("monitor", index).key("ca_bundle"),
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(cn: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).expect("cert"), key)
    }

    #[test]
    fn a_bundle_of_two_cas_parses_with_its_facts() {
        let (one, _) = ca("Contoso Root CA");
        let (two, _) = ca("Contoso Issuing CA");
        let pem = format!("{}\n{}", one.pem(), two.pem());
        let bundle = parse("contoso", &pem).expect("parses");
        assert_eq!(bundle.certificates.len(), 2);
        assert_eq!(bundle.info[0].subject, "CN=Contoso Root CA");
        assert_eq!(bundle.info[1].subject, "CN=Contoso Issuing CA");
        assert_eq!(bundle.info[0].sha256_fingerprint.len(), 32 * 3 - 1);
        assert_eq!(bundle.roots().len(), 2);
    }

    #[test]
    fn garbage_keys_and_leaves_are_refused_with_the_reason() {
        let refused = |pem: &str| parse("x", pem).expect_err("refused");
        assert!(refused("hello").contains("no PEM certificate"));
        assert!(refused("").contains("no PEM certificate"));
        let (cert, key) = ca("Contoso Root CA");
        let with_key = format!("{}{}", cert.pem(), key.serialize_pem());
        assert!(refused(&with_key).contains("private key"));
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            refused(broken).contains("certificate 1"),
            "{}",
            refused(broken)
        );
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["fe01.contoso.test".into()]).expect("params");
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let leaf = params.self_signed(&leaf_key).expect("leaf");
        let reason = refused(&leaf.pem());
        assert!(reason.contains("not a CA certificate"), "{reason}");
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(
            refused(csr).contains("not a CERTIFICATE"),
            "{}",
            refused(csr)
        );
        assert!(refused(&"A".repeat(MAX_PEM_BYTES + 1)).contains("larger than"));
    }

    #[test]
    fn names_are_short_plain_words() {
        assert!(check_name("contoso-root_2.pem").is_ok());
        for bad in ["", "-x", "a/b", "a b", "ü", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
