//! Backup and restore from the console (`poolgate admin backup`,
//! `poolgate admin restore`), on a data directory while poolgate is
//! stopped: the same archive, the same checks and the same one-transaction
//! restore as the API, without the control task (the restored config is
//! what the next start loads).

use std::path::Path;

use super::{BackupError, CertificatePem, Current, KeepListen, PreviewBody};
use crate::certs::{CERT_FILE, GENERATED_FILE, Identity, KEY_FILE};
use crate::config;
use crate::license::Licensing;
use crate::store::{Store, StoreError};

/// What a console restore found, and whether it wrote it.
#[derive(Debug)]
pub struct ConsoleRestore {
    /// What the restore changes (or would change), as JSON.
    pub preview: serde_json::Value,
    pub applied: bool,
    /// The certificate was installed (or would be).
    pub certificate: bool,
}

fn appliance_id(store: &Store, data_dir: &Path) -> Result<String, BackupError> {
    store.setting("appliance_id")?.ok_or_else(|| {
        super::contents(
            "data_dir",
            format!(
                "{} has no appliance id yet: start poolgate once first",
                data_dir.display()
            ),
        )
    })
}

fn read_certificate(data_dir: &Path) -> Option<CertificatePem> {
    let certificate = std::fs::read_to_string(data_dir.join(CERT_FILE)).ok()?;
    let key = std::fs::read_to_string(data_dir.join(KEY_FILE)).ok()?;
    let generated = std::fs::read_to_string(data_dir.join(GENERATED_FILE))
        .is_ok_and(|copies| copies.contains(certificate.trim()));
    Some(CertificatePem {
        certificate,
        key,
        generated,
    })
}

/// The encrypted archive of the appliance in `data_dir`.
pub fn backup_data_dir(
    data_dir: &Path,
    passphrase: &str,
    network: bool,
) -> Result<Vec<u8>, BackupError> {
    let store = Store::open(data_dir)?;
    let snapshot = super::collect_with(&store, read_certificate(data_dir), network)?;
    super::seal(&snapshot, passphrase)
}

/// Check `archive` against the appliance in `data_dir` and, with `apply`,
/// restore it there.
pub fn restore_data_dir(
    data_dir: &Path,
    archive: &[u8],
    passphrase: &str,
    apply: bool,
) -> Result<ConsoleRestore, BackupError> {
    let store = Store::open(data_dir)?;
    let id = appliance_id(&store, data_dir)?;
    let licensing = Licensing::new(store.clone(), crate::license::vendor_keys(), id.clone())?;
    let own = match store.latest_config()? {
        Some(stored) => Some((
            stored.id,
            config::from_toml(&stored.toml, "stored config").map_err(|e| {
                BackupError::Store(StoreError::StoredConfig {
                    id: stored.id,
                    message: e.to_string(),
                })
            })?,
        )),
        None => None,
    };
    let keep = match &own {
        Some((_, config)) => KeepListen::All(config),
        None => KeepListen::Nothing,
    };
    let snapshot = super::open(archive, passphrase)?;
    let plan = super::plan(snapshot, keep, &licensing)?;
    let certificate = read_certificate(data_dir)
        .and_then(|pem| crate::certs::check_pair(&pem.certificate, &pem.key).ok());
    let current = Current {
        version: own.as_ref().map_or(0, |(id, _)| *id),
        admin: store.admin_states()?,
        credentials: store.credentials()?,
        certificate,
        ca_bundles: store
            .ca_bundles()?
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        licence_id: licensing.status()?.license_id,
        appliance_id: id.clone(),
    };
    let preview: PreviewBody = super::preview(&plan, &current);
    let preview = serde_json::to_value(&preview).expect("a preview serialises");
    let has_certificate = plan.snapshot.certificate.is_some();
    if apply {
        store.restore(&plan.rows())?;
        if let Some(pem) = &plan.snapshot.certificate {
            let certs =
                crate::certs::Certificates::load_or_create(data_dir, &Identity::of_host(&id, &[]))?;
            certs
                .install(&pem.certificate, &pem.key)?
                .map_err(|problem| {
                    super::contents(
                        format!("certificate.{}", problem.field()),
                        problem.to_string(),
                    )
                })?;
        }
    }
    Ok(ConsoleRestore {
        preview,
        applied: apply,
        certificate: has_certificate,
    })
}
