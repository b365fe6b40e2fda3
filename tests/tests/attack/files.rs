//! Attacks on this surface; see `main.rs`.
//!
//! Files: someone who can read the data partition (another local account, a
//! backup tool, a copied disk image) must not get password and token hashes
//! or the admin key from it, so the data directory is 0700 and the database
//! and keys 0600, whatever umask poolgate was started with and however an
//! older version left them. The generated admin certificate names the
//! appliance, is valid for at most 825 days and is renewed by poolgate
//! before it ends; one an admin installed is never replaced.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolgate_e2e::{AdminClient, Poolgate, loopback_example};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

const PASSWORD: &str = "correct horse battery staple";
const DAY: i64 = 86_400;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The data directory, the database (with its WAL and shared-memory files
/// where they exist) and the admin key: owner-only.
fn assert_owner_only(data_dir: &Path) {
    assert_eq!(mode(data_dir), 0o700, "data directory");
    assert_eq!(mode(&data_dir.join("tls")), 0o700, "tls directory");
    for name in ["poolgate.db", "tls/admin-key.pem"] {
        assert_eq!(mode(&data_dir.join(name)), 0o600, "{name}");
    }
    for name in ["poolgate.db-wal", "poolgate.db-shm"] {
        let path = data_dir.join(name);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
}

/// Start on the loopback example and wait for the admin listener.
fn start(data_dir: &Path) -> (Poolgate, SocketAddr) {
    let poolgate = Poolgate::start_with_config(data_dir, &loopback_example(), &[]);
    let admin = poolgate.address("admin");
    (poolgate, admin)
}

fn appliance_id(poolgate: &Poolgate) -> String {
    poolgate.wait_for_line(Duration::from_secs(10), |line| {
        let (_, rest) = line.split_once("appliance_id=")?;
        Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
    })
}

#[test]
fn the_data_dir_the_database_and_the_key_are_owner_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let (mut poolgate, admin) = start(&data_dir);
    // Hashes in the database, and its WAL in use.
    AdminClient::setup_and_login(admin, PASSWORD);
    assert_owner_only(&data_dir);
    poolgate.terminate(Duration::from_secs(15));
}

#[test]
fn a_data_dir_left_wider_is_tightened_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let (mut poolgate, admin) = start(&data_dir);
    AdminClient::setup_and_login(admin, PASSWORD);
    poolgate.terminate(Duration::from_secs(15));
    // As an older version (or an admin's copy) left them.
    let widen = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    widen(&data_dir, 0o755);
    widen(&data_dir.join("tls"), 0o755);
    widen(&data_dir.join("poolgate.db"), 0o644);
    widen(&data_dir.join("tls/admin-key.pem"), 0o644);

    let (mut poolgate, admin) = start(&data_dir);
    AdminClient::new(admin).login("admin", PASSWORD);
    assert_eq!(mode(&data_dir), 0o700, "data directory");
    for name in ["poolgate.db", "tls/admin-key.pem"] {
        assert_eq!(mode(&data_dir.join(name)), 0o600, "{name}");
    }
    poolgate.terminate(Duration::from_secs(15));

    // Created 0755 before the first start.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).expect("mkdir");
    widen(&fresh, 0o755);
    let (mut poolgate, admin) = start(&fresh);
    AdminClient::setup_and_login(admin, PASSWORD);
    assert_owner_only(&fresh);
    poolgate.terminate(Duration::from_secs(15));
}

#[test]
fn the_generated_certificate_names_the_appliance_for_at_most_825_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let (mut poolgate, admin) = start(&data_dir);
    let id = appliance_id(&poolgate);
    let der = presented_certificate(admin);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let subject = cert.subject().to_string();
    assert!(subject.contains("O=poolgate"), "{subject}");
    assert!(subject.contains(&id), "{subject} names appliance {id}");
    assert!(!subject.contains("rcgen"), "{subject}");
    let (dns, ips) = alt_names(&cert);
    assert!(dns.contains(&"localhost".to_owned()), "{dns:?}");
    // The admin listener's specific address.
    assert!(ips.contains(&admin.ip()), "{ips:?}");
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let now = now();
    assert!(
        until - from <= 825 * DAY,
        "valid {} days",
        (until - from) / DAY
    );
    assert!(
        from <= now && from >= now - 2 * 3600,
        "not before {from}, now {now}"
    );
    poolgate.terminate(Duration::from_secs(15));
}

#[test]
fn an_expiring_generated_certificate_is_renewed_and_an_installed_one_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let (mut poolgate, _) = start(&data_dir);
    let id = appliance_id(&poolgate);
    poolgate.terminate(Duration::from_secs(15));

    // A generated certificate (listed in the file poolgate keeps of what
    // it generated) with ten days left.
    let (cert, key) = certificate_ending_in(10);
    std::fs::write(data_dir.join("tls/admin-cert.pem"), &cert).expect("cert");
    std::fs::write(data_dir.join("tls/admin-key.pem"), &key).expect("key");
    std::fs::write(data_dir.join("tls/admin-cert.generated"), &cert).expect("marker");
    let (mut poolgate, admin) = start(&data_dir);
    let der = presented_certificate(admin);
    let (_, renewed) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let left = (renewed.validity().not_after.timestamp() - now()) / DAY;
    assert!(left > 300, "renewed: {left} days left");
    assert!(renewed.subject().to_string().contains(&id));
    poolgate.terminate(Duration::from_secs(15));

    // Installed by an admin (not in that file): presented as it is.
    let (cert, key) = certificate_ending_in(10);
    std::fs::write(data_dir.join("tls/admin-cert.pem"), &cert).expect("cert");
    std::fs::write(data_dir.join("tls/admin-key.pem"), &key).expect("key");
    let (mut poolgate, admin) = start(&data_dir);
    let der = presented_certificate(admin);
    let (_, kept) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    let left = (kept.validity().not_after.timestamp() - now()) / DAY;
    assert!((8..=10).contains(&left), "kept: {left} days left");
    assert_eq!(alt_names(&kept).0, ["installed.contoso.test"]);
    poolgate.wait_for_line(Duration::from_secs(5), |line| {
        line.contains("expires soon").then_some(())
    });
    poolgate.terminate(Duration::from_secs(15));
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A self-signed certificate and key (PEM) that end in `days` days.
fn certificate_ending_in(days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["installed.contoso.test".to_owned()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(380);
    params.not_after = now + time::Duration::days(days);
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn alt_names(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> (Vec<String>, Vec<std::net::IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ips.push(std::net::Ipv4Addr::from(v4).into());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ips.push(std::net::Ipv6Addr::from(v6).into());
                    }
                }
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// The leaf certificate the admin listener presents in a TLS handshake.
fn presented_certificate(admin: SocketAddr) -> Vec<u8> {
    let seen = Arc::new(Mutex::new(None));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture {
            seen: Arc::clone(&seen),
            provider,
        }))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut socket = TcpStream::connect(admin).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Bounded: a handshake is a few round trips, each under the timeout.
    for _ in 0..20 {
        if !connection.is_handshaking() {
            break;
        }
        connection
            .complete_io(&mut socket)
            .expect("TLS handshake with the admin listener");
    }
    let der = seen.lock().expect("lock").take();
    der.expect("the admin listener presented a certificate")
}

/// Accepts any certificate and keeps the leaf, so the test can read it.
#[derive(Debug)]
struct Capture {
    seen: Arc<Mutex<Option<Vec<u8>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("lock") = Some(end_entity.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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
