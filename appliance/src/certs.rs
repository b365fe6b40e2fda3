//! The appliance certificate: what the admin listener (HTTPS) and SIP over
//! TLS present. On first start a self-signed certificate is generated
//! (rcgen) and kept in the data directory. `Certificates` holds it; an
//! uploaded certificate and key replace it while running, only after the
//! pair is checked (both parse, the key matches, it has not expired).
//!
//! The generated certificate names the appliance (`Identity`: CN the
//! hostname or `poolgate <appliance id>`, O `poolgate`, OU the appliance id;
//! SANs the hostname, `localhost` and the appliance's addresses), is valid
//! for [`GENERATED_VALIDITY_DAYS`] from an hour ago, and is renewed by
//! poolgate itself once fewer than [`RENEW_BEFORE_DAYS`] are left (checked at
//! start and daily, `keep_renewed`). poolgate knows it generated the
//! certificate in use because `tls/admin-cert.generated` holds a copy of it;
//! a certificate an admin installed is never in that file, so it is never
//! replaced, only warned about as it nears its end. A generated certificate
//! is also made again when it no longer names the appliance: the admin or
//! SIP-TLS listener moved to another specific address, or the hostname
//! changed (checked whenever the config changes, and daily).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::state::PoolView;

pub const CERT_FILE: &str = "tls/admin-cert.pem";
pub(crate) const KEY_FILE: &str = "tls/admin-key.pem";
/// Copies (PEM) of the certificates poolgate generated: the one in use is
/// poolgate's to renew only if it is among them.
pub(crate) const GENERATED_FILE: &str = "tls/admin-cert.generated";
/// Validity of a generated certificate: what browsers accept for a
/// publicly trusted one, well under the 825 days they take at most.
pub(crate) const GENERATED_VALIDITY_DAYS: i64 = 397;
/// A generated certificate with less than this left is replaced.
pub(crate) const RENEW_BEFORE_DAYS: i64 = 30;
/// How often `keep_renewed` looks.
const RENEW_CHECK: Duration = Duration::from_secs(24 * 3600);
/// The subject rcgen's `generate_simple_self_signed` gives: what earlier
/// versions generated, replaced at the next start.
const LEGACY_GENERATED_CN: &str = "rcgen self signed cert";
/// rcgen's default end of validity, 4096-01-01 (Unix seconds).
const LEGACY_GENERATED_NOT_AFTER: i64 = 67_090_118_400;
/// At most this many interface addresses go into a generated certificate.
const MAX_ADDRESSES: usize = 16;

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

/// A certificate and key pair that cannot be installed, by the field at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateProblem {
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Key(String),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
}

impl CertificateProblem {
    /// The request field the problem is in.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            Self::Certificate(_) => "certificate",
            Self::Key(_) | Self::Mismatch => "key",
        }
    }
}

/// What the UI shows about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub self_signed: bool,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub serial: String,
    pub sha256_fingerprint: String,
    /// Certificates in the chain, the appliance's own included.
    pub chain_length: usize,
}

/// The appliance certificate, replaceable while running: every TLS handshake
/// on the admin listener and on SIP over TLS asks it for the current one.
#[derive(Debug)]
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    generated_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// One install at a time: they share the staging files.
    installing: std::sync::Mutex<()>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl Certificates {
    /// The certificate and key from `data_dir`, generated on first start for
    /// `identity`, and renewed now if it is poolgate's and due.
    pub(crate) fn load_or_create(
        data_dir: &Path,
        identity: &Identity,
    ) -> Result<Arc<Self>, TlsError> {
        let cert_path = data_dir.join(CERT_FILE);
        let key_path = data_dir.join(KEY_FILE);
        let generated_path = data_dir.join(GENERATED_FILE);
        finish_install(&cert_path, &key_path)?;
        if !cert_path.exists() || !key_path.exists() {
            let dir = cert_path.parent().expect("certificate path has a parent");
            create_private_dir(dir).map_err(io_error(dir))?;
            let (cert, key) = generate(identity, time::OffsetDateTime::now_utc())?;
            write_private(&generated_path, cert.as_bytes()).map_err(io_error(&generated_path))?;
            write_private(&key_path, key.as_bytes()).map_err(io_error(&key_path))?;
            write_private(&cert_path, cert.as_bytes()).map_err(io_error(&cert_path))?;
            tracing::info!(certificate = %cert_path.display(), "Generated a self-signed admin certificate");
        }
        // Written owner-only by this version; an older one's may be wider.
        for path in [&key_path, &cert_path, &generated_path] {
            crate::store::tighten(path, 0o600).map_err(io_error(path))?;
        }
        let read = |path: &Path| std::fs::read_to_string(path).map_err(io_error(path));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = checked_pair(&read(&cert_path)?, &read(&key_path)?, &provider, None).map_err(
            |problem| TlsError::Pem {
                path: if problem.field() == "key" {
                    key_path.clone()
                } else {
                    cert_path.clone()
                },
                message: problem.to_string(),
            },
        )?;
        let certificates = Arc::new(Self {
            cert_path,
            key_path,
            generated_path,
            provider,
            current: RwLock::new(Arc::new(key)),
            installing: std::sync::Mutex::default(),
        });
        certificates.renew_if_due(identity, time::OffsetDateTime::now_utc())?;
        Ok(certificates)
    }

    /// Replace the certificate in use with a new generated one for
    /// `identity` if poolgate generated it and it is due (or is of the kind
    /// earlier versions generated); warn if an installed one is due. Blocking
    /// (file writes): call it off the async threads.
    pub(crate) fn renew_if_due(
        &self,
        identity: &Identity,
        now: time::OffsetDateTime,
    ) -> Result<Renewal, TlsError> {
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        let leaf = current.cert.first().expect("a checked chain has a leaf");
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
            return Ok(Renewal::NotDue);
        };
        let not_after = parsed.validity().not_after.timestamp();
        // rcgen's defaults exactly: its subject, valid until 4096.
        let legacy = parsed.subject().as_raw() == parsed.issuer().as_raw()
            && not_after >= LEGACY_GENERATED_NOT_AFTER
            && parsed
                .subject()
                .iter_common_name()
                .any(|cn| cn.as_str() == Ok(LEGACY_GENERATED_CN));
        let generated = legacy || self.generated_certificates().contains(leaf);
        let due = renewal_due(not_after, now.unix_timestamp());
        // A generated certificate that no longer names the appliance as it
        // is now (the admin listener moved, the host was renamed).
        let stale = !names_identity(&parsed, identity);
        if !generated {
            if due {
                let left_days = (not_after - now.unix_timestamp()) / 86_400;
                tracing::warn!(
                    certificate = %self.cert_path.display(),
                    left_days,
                    "The installed appliance certificate expires soon; install a new one"
                );
                return Ok(Renewal::InstalledExpiring);
            }
            return Ok(Renewal::NotDue);
        }
        if !due && !legacy && !stale {
            return Ok(Renewal::NotDue);
        }
        let (cert_pem, key_pem) = generate(identity, now)?;
        let fresh =
            checked_pair(&cert_pem, &key_pem, &self.provider, Some(now)).map_err(|problem| {
                TlsError::Pem {
                    path: self.cert_path.clone(),
                    message: format!("the generated certificate: {problem}"),
                }
            })?;
        // The copy lists old and new until the new pair is in place, so
        // whichever a crash leaves in use is still known as poolgate's.
        let old_pem = pem_block("CERTIFICATE", leaf.as_ref());
        write_private(
            &self.generated_path,
            format!("{old_pem}{cert_pem}").as_bytes(),
        )
        .map_err(io_error(&self.generated_path))?;
        let (key_new, cert_new) = (staged(&self.key_path), staged(&self.cert_path));
        write_private(&key_new, key_pem.as_bytes()).map_err(io_error(&key_new))?;
        write_private(&cert_new, cert_pem.as_bytes()).map_err(io_error(&cert_new))?;
        finish_install(&self.cert_path, &self.key_path)?;
        write_private(&self.generated_path, cert_pem.as_bytes())
            .map_err(io_error(&self.generated_path))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        let info = self.info().ok();
        tracing::info!(
            not_after = info.as_ref().map(|i| i.not_after.as_str()),
            replaced_legacy = legacy,
            names = ?identity.addresses,
            renamed = stale,
            "Renewed the generated appliance certificate"
        );
        Ok(Renewal::Renewed)
    }

    /// The certificates poolgate generated (DER), from `GENERATED_FILE`.
    fn generated_certificates(&self) -> Vec<CertificateDer<'static>> {
        std::fs::read(&self.generated_path)
            .map(|pem| {
                CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The certificate presented now.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The certificate (chain) and key in use now, as PEM text: what the HA
    /// sync identity of a pair made before it had one of its own starts
    /// from. Blocking (file reads).
    pub(crate) fn current_pem(&self) -> Result<String, TlsError> {
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let read = |path: &Path| std::fs::read_to_string(path).map_err(io_error(path));
        Ok(format!(
            "{}{}",
            read(&self.cert_path)?,
            read(&self.key_path)?
        ))
    }

    /// Details of the certificate presented now.
    pub(crate) fn info(&self) -> Result<CertificateInfo, CertificateProblem> {
        describe(&self.current().cert)
    }

    /// A server config that presents the current certificate, whatever it is
    /// at handshake time.
    pub(crate) fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The certificate chain and key files in use (PEM), and whether
    /// poolgate generated the certificate: what a full backup carries.
    /// Blocking (file reads).
    pub(crate) fn pem_pair(&self) -> Result<(String, String, bool), TlsError> {
        let read = |path: &Path| std::fs::read_to_string(path).map_err(io_error(path));
        let (cert, key) = (read(&self.cert_path)?, read(&self.key_path)?);
        let generated = self
            .current()
            .cert
            .first()
            .is_some_and(|leaf| self.generated_certificates().contains(leaf));
        Ok((cert, key, generated))
    }

    /// Check a PEM certificate (chain) and key; only if they pass, write
    /// them to the data directory and present them from the next handshake.
    /// Blocking (file writes): call it off the async threads.
    pub(crate) fn install(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Result<CertificateInfo, CertificateProblem>, TlsError> {
        let key = match checked_pair(
            cert_pem,
            key_pem,
            &self.provider,
            Some(time::OffsetDateTime::now_utc()),
        ) {
            Ok(key) => key,
            Err(problem) => return Ok(Err(problem)),
        };
        let info = match describe(&key.cert) {
            Ok(info) => info,
            Err(problem) => return Ok(Err(problem)),
        };
        // Normalised PEM of exactly what was checked.
        let (label, der) = key_der(key_pem);
        let key_text = pem_block(label, &der);
        let cert_text: String = key
            .cert
            .iter()
            .map(|der| pem_block("CERTIFICATE", der.as_ref()))
            .collect();
        // Both staged in full before either replaces the pair in use, so a
        // crash at any point leaves a pair that `finish_install` completes
        // or discards at the next start.
        let _one_at_a_time = self.installing.lock().unwrap_or_else(|p| p.into_inner());
        let (key_new, cert_new) = (staged(&self.key_path), staged(&self.cert_path));
        write_private(&key_new, key_text.as_bytes()).map_err(io_error(&key_new))?;
        write_private(&cert_new, cert_text.as_bytes()).map_err(io_error(&cert_new))?;
        finish_install(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        tracing::info!(subject = ?info.subject, not_after = %info.not_after, "Installed a new appliance certificate");
        Ok(Ok(info))
    }
}

/// What `renew_if_due` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    NotDue,
    /// A generated certificate was replaced and is presented from now on.
    Renewed,
    /// An installed certificate is due; it stays (an admin must replace it).
    InstalledExpiring,
}

/// Who a generated certificate names: the appliance, as known at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub appliance_id: String,
    /// `None` when unknown or not a usable DNS name.
    pub hostname: Option<String>,
    pub addresses: Vec<IpAddr>,
    /// Whether `addresses` are the listeners' own (specific) addresses,
    /// rather than the host's, which come and go (VIPs, DHCP) and are
    /// named only as they were when the certificate was made.
    pub specific: bool,
}

impl Identity {
    /// This host: its hostname, and `listen` addresses that are specific,
    /// or the host's own non-loopback addresses if none is.
    pub(crate) fn of_host(appliance_id: &str, listen: &[IpAddr]) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| dns_name_ok(name));
        let mut addresses: Vec<IpAddr> = listen
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let specific = !addresses.is_empty();
        if !specific {
            addresses = host_addresses();
        }
        addresses.sort();
        addresses.dedup();
        addresses.truncate(MAX_ADDRESSES);
        Self {
            appliance_id: appliance_id.to_owned(),
            hostname,
            addresses,
            specific,
        }
    }

    /// This host as a config serves it: named by the admin and SIP-TLS
    /// addresses if they are specific, otherwise by the host's own.
    pub(crate) fn for_config(appliance_id: &str, config: &Config) -> Self {
        let listen: Vec<IpAddr> = std::iter::once(config.listen.admin.ip())
            .chain(config.listen.sip_tls.map(|address| address.ip()))
            .collect();
        Self::of_host(appliance_id, &listen)
    }

    /// The hostname, unless it is one every appliance shares (the image's
    /// `poolgate`, `localhost`): then the appliance id tells them apart.
    pub(crate) fn common_name(&self) -> String {
        match self.hostname.as_deref() {
            Some(name) if !matches!(name, "poolgate" | "localhost" | "localhost.localdomain") => {
                name.to_owned()
            }
            _ => format!("poolgate {}", self.appliance_id),
        }
    }

    pub(crate) fn dns_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hostname.iter().cloned().collect();
        if !names.iter().any(|n| n == "localhost") {
            names.push("localhost".to_owned());
        }
        names
    }
}

/// The host's addresses other than loopback and IPv6 link-local (which
/// need a zone no certificate can name), best effort.
fn host_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(address.as_sockaddr_in6()?.ip())
            };
            let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
            (!ip.is_loopback() && !ip.is_unspecified() && !link_local).then_some(ip)
        })
        .collect()
}

/// A DNS name a certificate may carry: dot-separated labels of letters,
/// digits and inner hyphens.
fn dns_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether a certificate valid until `not_after` (Unix seconds) is due for
/// renewal at `now`.
/// Whether `cert` names the hostname of `identity`, and its addresses if
/// they are the listeners' own.
fn names_identity(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    identity: &Identity,
) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return !identity.specific && identity.hostname.is_none();
    };
    let names = &san.value.general_names;
    let has_ip = |ip: &IpAddr| {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        names.iter().any(
            |name| matches!(name, GeneralName::IPAddress(bytes) if *bytes == octets.as_slice()),
        )
    };
    let has_dns = |host: &str| {
        names
            .iter()
            .any(|name| matches!(name, GeneralName::DNSName(dns) if dns.eq_ignore_ascii_case(host)))
    };
    (!identity.specific || identity.addresses.iter().all(has_ip))
        && identity.hostname.as_deref().is_none_or(has_dns)
}

fn renewal_due(not_after: i64, now: i64) -> bool {
    not_after - now < RENEW_BEFORE_DAYS * 86_400
}

/// A new self-signed certificate (PEM) and its key (PKCS#8 PEM) for
/// `identity`, valid from an hour before `now` (clocks of clients differ)
/// for `GENERATED_VALIDITY_DAYS`.
fn generate(identity: &Identity, now: time::OffsetDateTime) -> Result<(String, String), TlsError> {
    use rcgen::{DnType, SanType};
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.common_name());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "poolgate");
    params.distinguished_name.push(
        DnType::OrganizationalUnitName,
        identity.appliance_id.clone(),
    );
    for name in identity.dns_names() {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.try_into()?));
    }
    for ip in &identity.addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(GENERATED_VALIDITY_DAYS);
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Renew the certificate when due (see `Certificates::renew_if_due`):
/// checked once a day, and whenever the config in `views` changes the
/// addresses a generated certificate names, until `shutdown`.
pub(crate) async fn keep_renewed(
    certificates: Arc<Certificates>,
    appliance_id: String,
    mut views: watch::Receiver<Arc<PoolView>>,
    shutdown: CancellationToken,
) {
    // `load_or_create` has just checked.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_CHECK, RENEW_CHECK);
    let mut identity = Identity::for_config(&appliance_id, &views.borrow_and_update().config);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                identity = Identity::for_config(&appliance_id, &views.borrow().config);
            }
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                // Most generations change health only: nothing to check.
                let now = Identity::for_config(&appliance_id, &views.borrow_and_update().config);
                if now == identity {
                    continue;
                }
                identity = now;
            }
        }
        let (certificates, identity) = (Arc::clone(&certificates), identity.clone());
        let checked = tokio::task::spawn_blocking(move || {
            certificates.renew_if_due(&identity, time::OffsetDateTime::now_utc())
        })
        .await;
        match checked {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "Cannot renew the appliance certificate"),
            Err(error) => tracing::error!(%error, "Certificate renewal task failed"),
        }
    }
}

/// Create `dir` (and parents) owner-only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + use<> {
    let path = path.to_owned();
    move |source| TlsError::Io { path, source }
}

/// Check a PEM certificate (chain) and key as an install would (they
/// parse, belong together and are valid now), installing nothing.
pub(crate) fn check_pair(
    cert_pem: &str,
    key_pem: &str,
) -> Result<CertificateInfo, CertificateProblem> {
    let provider = rustls::crypto::ring::default_provider();
    let pair = checked_pair(
        cert_pem,
        key_pem,
        &provider,
        Some(time::OffsetDateTime::now_utc()),
    )?;
    describe(&pair.cert)
}

/// A certificate chain and its key from one PEM text holding both,
/// checked to belong together (no validity check: for a pinned identity).
pub(crate) fn pinned_pair(pem: &str) -> Result<CertifiedKey, String> {
    let provider = rustls::crypto::ring::default_provider();
    checked_pair(pem, pem, &provider, None).map_err(|problem| problem.to_string())
}

/// Parse a PEM chain and key and check they belong together (and, with
/// `now`, that the certificate is valid at that time).
fn checked_pair(
    cert_pem: &str,
    key_pem: &str,
    provider: &CryptoProvider,
    now: Option<time::OffsetDateTime>,
) -> Result<CertifiedKey, CertificateProblem> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertificateProblem::Certificate(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertificateProblem::Certificate(
            "no -----BEGIN CERTIFICATE----- block".into(),
        ));
    }
    let info = describe(&certs)?;
    if let Some(now) = now {
        let (_, leaf) = x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(|e| {
            CertificateProblem::Certificate(format!("not an X.509 certificate: {e}"))
        })?;
        let validity = leaf.validity();
        if validity.not_after.timestamp() < now.unix_timestamp() {
            return Err(CertificateProblem::Certificate(format!(
                "expired on {}",
                info.not_after
            )));
        }
        if validity.not_before.timestamp() > now.unix_timestamp() {
            return Err(CertificateProblem::Certificate(format!(
                "not valid before {}",
                info.not_before
            )));
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        CertificateProblem::Key(format!("no usable -----BEGIN PRIVATE KEY----- block: {e}"))
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertificateProblem::Key(format!("unsupported private key: {e}")))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .map_err(|_| CertificateProblem::Mismatch)?;
    Ok(pair)
}

/// Details of the first certificate of a chain.
fn describe(chain: &[CertificateDer<'_>]) -> Result<CertificateInfo, CertificateProblem> {
    use sha2::Digest;
    use x509_parser::extensions::GeneralName;
    let leaf = chain
        .first()
        .ok_or_else(|| CertificateProblem::Certificate("empty chain".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| CertificateProblem::Certificate(format!("not an X.509 certificate: {e}")))?;
    let (mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns_names.push((*name).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ip_addresses.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ip_addresses.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let when = |t: &x509_parser::time::ASN1Time| {
        time::OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map(crate::clock::rfc3339)
            .unwrap_or_default()
    };
    let fingerprint = sha2::Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        dns_names,
        ip_addresses,
        not_before: when(&cert.validity().not_before),
        not_after: when(&cert.validity().not_after),
        serial: cert.raw_serial_as_string(),
        sha256_fingerprint: fingerprint,
        chain_length: chain.len(),
    })
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1): its PEM label
/// and DER.
fn key_der(pem: &str) -> (&'static str, Vec<u8>) {
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs1(der)) => ("RSA PRIVATE KEY", der.secret_pkcs1_der().to_vec()),
        Ok(PrivateKeyDer::Sec1(der)) => ("EC PRIVATE KEY", der.secret_sec1_der().to_vec()),
        Ok(PrivateKeyDer::Pkcs8(der)) => ("PRIVATE KEY", der.secret_pkcs8_der().to_vec()),
        Ok(_) | Err(_) => ("PRIVATE KEY", Vec::new()),
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Where an install stages a file before it replaces `path`.
fn staged(path: &Path) -> PathBuf {
    path.with_extension("pem.new")
}

/// Complete an install that staged its certificate (the last file staged,
/// so the key is staged or already in place), or discard one that did not
/// get that far. The key is moved first: with the certificate still staged,
/// a restart completes the move.
fn finish_install(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let (key_new, cert_new) = (staged(key_path), staged(cert_path));
    if cert_new.exists() {
        if key_new.exists() {
            std::fs::rename(&key_new, key_path).map_err(io_error(&key_new))?;
        }
        std::fs::rename(&cert_new, cert_path).map_err(io_error(&cert_new))?;
        if let Some(dir) = cert_path.parent() {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error(dir))?;
        }
    } else if key_new.exists() {
        std::fs::remove_file(&key_new).map_err(io_error(&key_new))?;
    }
    Ok(())
}

/// Write a file only its owner can read, durably, replacing it atomically.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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
#[cfg(test)]
mod tests {
    use super::*;

    fn pair(days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![
            "pool.contoso.test".to_owned(),
            "192.0.2.7".to_owned(),
        ])
        .expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn identity() -> Identity {
        Identity {
            appliance_id: "0123456789abcdef0123456789abcdef".into(),
            hostname: Some("lb1.contoso.test".into()),
            addresses: vec!["192.0.2.10".parse().expect("ip")],
            specific: true,
        }
    }

    fn days_left(certificates: &Certificates) -> i64 {
        let current = certificates.current();
        let (_, cert) =
            x509_parser::parse_x509_certificate(current.cert[0].as_ref()).expect("x509");
        (cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp())
            / 86_400
    }

    /// A certificate with `days` left written in place of the one in use,
    /// listed as generated or not.
    fn replace_in_place(dir: &Path, pem: &(String, String), generated: bool) {
        std::fs::write(dir.join(CERT_FILE), &pem.0).expect("cert");
        std::fs::write(dir.join(KEY_FILE), &pem.1).expect("key");
        if generated {
            std::fs::write(dir.join(GENERATED_FILE), &pem.0).expect("marker");
        }
    }

    #[test]
    fn the_generated_certificate_names_the_appliance_for_at_most_825_days() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certificates = Certificates::load_or_create(dir.path(), &identity()).expect("generate");
        let info = certificates.info().expect("info");
        assert_eq!(
            info.subject,
            "CN=lb1.contoso.test, O=poolgate, OU=0123456789abcdef0123456789abcdef"
        );
        assert_eq!(info.dns_names, ["lb1.contoso.test", "localhost"]);
        assert_eq!(info.ip_addresses, ["192.0.2.10"]);
        let left = days_left(&certificates);
        assert!((GENERATED_VALIDITY_DAYS - 1..=GENERATED_VALIDITY_DAYS).contains(&left));
        let shared = Identity {
            hostname: Some("poolgate".into()),
            ..identity()
        };
        assert_eq!(
            shared.common_name(),
            "poolgate 0123456789abcdef0123456789abcdef"
        );
        assert!(!dns_name_ok("bad_name.example"));
        assert!(!dns_name_ok("-x.example"));
        assert!(dns_name_ok("fe01.contoso.test"));
    }

    #[test]
    fn renewal_is_due_thirty_days_before_the_end() {
        let day = 86_400;
        assert!(!renewal_due(31 * day, 0));
        assert!(renewal_due(29 * day, 0));
        assert!(renewal_due(-day, 0));
    }

    #[test]
    fn an_expiring_generated_certificate_is_renewed_and_an_installed_one_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        Certificates::load_or_create(dir.path(), &identity()).expect("generate");
        let expiring = pair(10);
        replace_in_place(dir.path(), &expiring, true);
        let renewed = Certificates::load_or_create(dir.path(), &identity()).expect("renew");
        assert!(days_left(&renewed) > 300);
        assert_eq!(
            renewed.info().expect("info").dns_names,
            ["lb1.contoso.test", "localhost"]
        );
        // What is on disk is what is presented, and known as generated.
        let again = Certificates::load_or_create(dir.path(), &identity()).expect("load");
        assert_eq!(again.info().expect("info"), renewed.info().expect("info"));
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(
            again.renew_if_due(&identity(), now).expect("check"),
            Renewal::NotDue
        );
        assert_eq!(
            again
                .renew_if_due(&identity(), now + time::Duration::days(380))
                .expect("renew later"),
            Renewal::Renewed
        );

        // Installed by an admin: kept, however close to its end.
        let installed = pair(10);
        replace_in_place(dir.path(), &installed, false);
        let kept = Certificates::load_or_create(dir.path(), &identity()).expect("load");
        assert_eq!(kept.info().expect("info").dns_names, ["pool.contoso.test"]);
        assert_eq!(
            kept.renew_if_due(&identity(), now).expect("check"),
            Renewal::InstalledExpiring
        );
        assert_eq!(kept.info().expect("info").dns_names, ["pool.contoso.test"]);
    }

    #[test]
    fn a_generated_certificate_follows_the_admin_address_and_the_hostname() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certificates = Certificates::load_or_create(dir.path(), &identity()).expect("generate");
        let now = time::OffsetDateTime::now_utc();
        // The admin listener moved to another specific address.
        let moved = Identity {
            addresses: vec!["192.0.2.11".parse().expect("ip")],
            ..identity()
        };
        assert_eq!(
            certificates.renew_if_due(&moved, now).expect("check"),
            Renewal::Renewed
        );
        assert_eq!(
            certificates.info().expect("info").ip_addresses,
            ["192.0.2.11"]
        );
        assert_eq!(
            certificates.renew_if_due(&moved, now).expect("check"),
            Renewal::NotDue,
            "made once"
        );
        // Host addresses (a wildcard listener) come and go: not a reason.
        let wildcard = Identity {
            addresses: vec!["198.51.100.20".parse().expect("ip")],
            specific: false,
            ..moved.clone()
        };
        assert_eq!(
            certificates.renew_if_due(&wildcard, now).expect("check"),
            Renewal::NotDue
        );
        // A new hostname is.
        let renamed = Identity {
            hostname: Some("lb2.contoso.test".into()),
            ..moved
        };
        assert_eq!(
            certificates.renew_if_due(&renamed, now).expect("check"),
            Renewal::Renewed
        );
        assert_eq!(
            certificates.info().expect("info").dns_names,
            ["lb2.contoso.test", "localhost"]
        );
        // An installed certificate is the admin's: never replaced for this.
        replace_in_place(dir.path(), &pair(100), false);
        let installed = Certificates::load_or_create(dir.path(), &identity()).expect("load");
        assert_eq!(
            installed.renew_if_due(&renamed, now).expect("check"),
            Renewal::NotDue
        );
        assert_eq!(
            installed.info().expect("info").dns_names,
            ["pool.contoso.test"]
        );
    }

    #[test]
    fn a_certificate_of_the_kind_earlier_versions_generated_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("legacy certificate");
        std::fs::create_dir_all(dir.path().join("tls")).expect("tls dir");
        replace_in_place(
            dir.path(),
            &(legacy.cert.pem(), legacy.signing_key.serialize_pem()),
            false,
        );
        let replaced = Certificates::load_or_create(dir.path(), &identity()).expect("load");
        let info = replaced.info().expect("info");
        assert!(
            info.subject.starts_with("CN=lb1.contoso.test"),
            "{}",
            info.subject
        );
        assert!(days_left(&replaced) <= GENERATED_VALIDITY_DAYS);
    }

    #[test]
    fn a_matching_pair_is_described() {
        let (cert, key) = pair(30);
        let now = Some(time::OffsetDateTime::now_utc());
        let checked = checked_pair(&cert, &key, &provider(), now).expect("valid pair");
        let info = describe(&checked.cert).expect("info");
        assert_eq!(info.dns_names, ["pool.contoso.test"]);
        assert_eq!(info.ip_addresses, ["192.0.2.7"]);
        assert!(info.self_signed);
        assert_eq!(info.sha256_fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn a_wrong_key_an_expired_certificate_and_garbage_are_refused_by_field() {
        let (cert, _) = pair(30);
        let (_, other_key) = pair(30);
        let (expired, expired_key) = pair(-1);
        let now = Some(time::OffsetDateTime::now_utc());
        let field = |result: Result<CertifiedKey, CertificateProblem>| {
            result.err().map(|problem| problem.field())
        };
        assert!(matches!(
            checked_pair(&cert, &other_key, &provider(), now),
            Err(CertificateProblem::Mismatch)
        ));
        assert_eq!(
            field(checked_pair(&expired, &expired_key, &provider(), now)),
            Some("certificate")
        );
        assert!(checked_pair(&expired, &expired_key, &provider(), None).is_ok());
        assert_eq!(
            field(checked_pair("", &other_key, &provider(), now)),
            Some("certificate")
        );
        assert_eq!(
            field(checked_pair(&cert, "junk", &provider(), now)),
            Some("key")
        );
    }

    #[test]
    fn an_interrupted_install_is_completed_or_discarded_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = identity();
        let first = Certificates::load_or_create(dir.path(), &names).expect("generate");
        let original = first.info().expect("info").sha256_fingerprint;
        let (cert_path, key_path) = (dir.path().join(CERT_FILE), dir.path().join(KEY_FILE));
        let (cert, key) = pair(30);

        // Only the key was staged: the install is dropped.
        std::fs::write(staged(&key_path), &key).expect("stage key");
        let again = Certificates::load_or_create(dir.path(), &names).expect("load");
        assert_eq!(again.info().expect("info").sha256_fingerprint, original);
        assert!(!staged(&key_path).exists());

        // The key moved, the certificate still staged: the install completes.
        std::fs::write(&key_path, &key).expect("key in place");
        std::fs::write(staged(&cert_path), &cert).expect("stage certificate");
        let completed = Certificates::load_or_create(dir.path(), &names).expect("load");
        let info = completed.info().expect("info");
        assert_ne!(info.sha256_fingerprint, original);
        assert_eq!(info.dns_names, ["pool.contoso.test"]);
        assert!(!staged(&cert_path).exists());
    }

    #[test]
    fn the_written_key_keeps_its_format() {
        let (_, key) = pair(30);
        let (label, der) = key_der(&key);
        let pem = pem_block(label, &der);
        assert!(
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).is_ok(),
            "{pem}"
        );
    }
}
