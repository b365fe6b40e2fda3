//! Certificate verification for TLS-speaking monitors, and why it failed in
//! plain words with the facts an admin acts on: "certificate expired on
//! 2026-01-31", "unknown issuer CN=Contoso Issuing CA (not in CA bundle
//! contoso)", "certificate is for fe01.contoso.com, fabrikam.com, not
//! fe09.contoso.com", "self-signed certificate CN=fe01".
//!
//! [`Explaining`] wraps rustls's own web PKI verifier: the decision is
//! rustls's, unchanged; only a refusal is rewritten, from the leaf
//! certificate the server presented ([`explain`], pure). The text travels
//! inside the rustls error (`CertificateError::Other` holding an
//! [`Explained`]) to the probe, which shows it as the reason.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

/// A verification failure already put in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Explained(pub String);

/// rustls's verifier, with refusals explained. `trusted` names the roots
/// ("CA bundle \"contoso\"", "the public web roots") for the reason.
#[derive(Debug)]
pub(crate) struct Explaining {
    inner: Arc<WebPkiServerVerifier>,
    trusted: String,
}

impl Explaining {
    pub(crate) fn new(inner: Arc<WebPkiServerVerifier>, trusted: String) -> Self {
        Self { inner, trusted }
    }
}

impl ServerCertVerifier for Explaining {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| match error {
                rustls::Error::InvalidCertificate(problem) => {
                    let text = explain(&problem, end_entity, server_name, &self.trusted);
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(Explained(text)),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the leaf certificate says, as far as reasons need it.
struct Leaf {
    subject: String,
    issuer: String,
    self_signed: bool,
    not_before: i64,
    not_after: i64,
    /// DNS names then IP addresses of the subjectAltName.
    names: Vec<String>,
}

fn leaf(der: &CertificateDer<'_>) -> Option<Leaf> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ips.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ips.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    dns.extend(ips);
    Some(Leaf {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names: dns,
    })
}

/// A day as `2026-01-31` (UTC).
fn day(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn name_of(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Why `end_entity` was refused for `expected`, in words. Pure.
pub(crate) fn explain(
    problem: &CertificateError,
    end_entity: &CertificateDer<'_>,
    expected: &ServerName<'_>,
    trusted: &str,
) -> String {
    let Some(leaf) = leaf(end_entity) else {
        return format!("the server's certificate does not parse ({problem:?})");
    };
    match problem {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("certificate expired on {}", day(leaf.not_after))
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("certificate not valid until {}", day(leaf.not_before))
        }
        CertificateError::UnknownIssuer if leaf.self_signed => format!(
            "self-signed certificate {} (not in {trusted}; upload it as a CA bundle only if it should be trusted)",
            leaf.subject
        ),
        CertificateError::UnknownIssuer => {
            format!("unknown issuer {} (not in {trusted})", leaf.issuer)
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let expected = name_of(expected);
            if leaf.names.is_empty() {
                format!(
                    "certificate is for no server name (it has no subjectAltName; {}), not {expected}",
                    leaf.subject
                )
            } else {
                format!(
                    "certificate is for {}, not {expected}",
                    leaf.names.join(", ")
                )
            }
        }
        CertificateError::Revoked => format!("certificate revoked ({})", leaf.subject),
        CertificateError::BadSignature => format!(
            "certificate has a bad signature ({}, issuer {})",
            leaf.subject, leaf.issuer
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "certificate is not for TLS servers (its extended key usage; {})",
                leaf.subject
            )
        }
        other => format!("invalid certificate {} ({other:?})", leaf.subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(
        names: &[&str],
        cn: &str,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn name(text: &str) -> ServerName<'static> {
        ServerName::try_from(text.to_owned()).expect("name")
    }

    #[test]
    fn reasons_name_the_facts() {
        let leaf = cert(
            &["fe01.contoso.com", "fabrikam.com", "192.0.2.1"],
            "fe01",
            (2025, 1, 1),
            (2026, 1, 31),
        );
        let expected = name("fe09.contoso.com");
        let say = |problem: CertificateError| {
            explain(&problem, &leaf, &expected, "CA bundle \"contoso\"")
        };
        assert_eq!(
            say(CertificateError::Expired),
            "certificate expired on 2026-01-31"
        );
        assert_eq!(
            say(CertificateError::NotValidYet),
            "certificate not valid until 2025-01-01"
        );
        assert_eq!(
            say(CertificateError::NotValidForName),
            "certificate is for fe01.contoso.com, fabrikam.com, 192.0.2.1, not fe09.contoso.com"
        );
        // Self-signed: issuer and subject are the same name.
        assert!(
            say(CertificateError::UnknownIssuer)
                .starts_with("self-signed certificate CN=fe01 (not in CA bundle \"contoso\""),
            "{}",
            say(CertificateError::UnknownIssuer)
        );
        let ip = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 9]).into());
        assert_eq!(
            explain(&CertificateError::NotValidForName, &leaf, &ip, "x"),
            "certificate is for fe01.contoso.com, fabrikam.com, 192.0.2.1, not 127.0.0.9"
        );
    }

    #[test]
    fn an_unknown_issuer_is_named() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Contoso Issuing CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["fe01.contoso.com".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        drop(ca_cert);
        assert_eq!(
            explain(
                &CertificateError::UnknownIssuer,
                leaf.der(),
                &name("fe01.contoso.com"),
                "the public web roots"
            ),
            "unknown issuer CN=Contoso Issuing CA (not in the public web roots)"
        );
    }

    #[test]
    fn an_unreadable_certificate_still_gets_a_reason() {
        let junk = CertificateDer::from(vec![1, 2, 3]);
        let text = explain(
            &CertificateError::BadEncoding,
            &junk,
            &name("fe01.contoso.com"),
            "x",
        );
        assert!(text.contains("does not parse"), "{text}");
    }
}
