//! Full backup and restore of an appliance, and the support bundle
//! (`support`).
//!
//! A backup ([`collect`], then [`seal`]) is one archive (`format`: a
//! versioned header, XChaCha20-Poly1305 under an Argon2id key from the
//! admin's passphrase) of a JSON [`Snapshot`]: every config version, every
//! member's admin state with its time, users and API tokens (hashes only:
//! what the store holds), the appliance certificate and key, CA bundles,
//! licences and, when asked, the network and VRRP settings.
//!
//! A restore reads the archive ([`open`]), checks everything in it
//! ([`plan`]: the newest config validates with the archive's CA bundles, the
//! certificate and key belong together and are valid now, every bundle
//! passes its checks, every admin state and user name is one poolgate
//! knows) before anything is written, and shows what it would change
//! ([`preview`]). Applying it is a change of the control task
//! (`Change::Restore`): the store replaces the restorable tables in one
//! transaction (which also ends every session), then the restored config and
//! bundles are published; the certificate is installed after that.
//!
//! Invariants:
//! * A wrong passphrase, a changed byte, an archive of an unknown version or
//!   contents that do not pass the checks are refused before anything is
//!   written; the answer names the reason.
//! * This appliance keeps what belongs to it: its appliance id, its
//!   licensing clock, its HA pairing and its own `[listen]` section (as a
//!   config from the HA peer does); the network and VRRP settings in an
//!   archive are shown, never applied behind the admin's back (they go
//!   through the network page's safe apply).
//! * A licence bound to another appliance (restoring onto replacement
//!   hardware) is not installed — it would make this appliance's licence
//!   invalid — but reported, with what to do; this appliance keeps its own
//!   licence or evaluation.

mod console;
pub(crate) mod format;
pub(crate) mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::certs::{CertificateInfo, Certificates};
use crate::config::{self, AdminState, Config};
use crate::health::ca::{self, CaBundles};
use crate::license::{LicenceError, Licensing};
use crate::store::{AdminRow, Credentials, LicenceRow, Restore, Store, StoreError, StoredVersion};

pub use console::{ConsoleRestore, backup_data_dir, restore_data_dir};
pub use format::{FormatError, MAX_ARCHIVE_BYTES, MIN_PASSPHRASE_LEN};

/// The payload's own version, inside the encrypted archive.
pub(crate) const PAYLOAD_FORMAT: u32 = 1;

/// Settings keys of what belongs to the appliance's network.
const NETWORK_KEY: &str = "network.settings";
const VRRP_KEY: &str = crate::vrrp::SETTINGS_KEY;

/// What a backup holds (the archive's JSON payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub format: u32,
    pub made_at: String,
    pub poolgate_version: String,
    pub appliance_id: String,
    pub config_versions: Vec<StoredVersion>,
    pub admin_states: Vec<AdminRow>,
    pub credentials: Credentials,
    pub certificate: Option<CertificatePem>,
    pub ca_bundles: Vec<CaBundlePem>,
    pub licences: Vec<LicenceRow>,
    /// The network settings (JSON, as stored), if the backup included them.
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    /// The VRRP settings (JSON, as stored), likewise.
    #[serde(default)]
    pub vrrp: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertificatePem {
    pub certificate: String,
    pub key: String,
    /// poolgate generated it (on the appliance the backup came from).
    pub generated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CaBundlePem {
    pub name: String,
    pub pem: String,
}

/// Why a backup or restore cannot be done; each names its reason.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The archive opened, but something in it cannot be restored.
    #[error("{field}: {message}")]
    Contents { field: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] crate::certs::TlsError),
}

fn contents(field: impl Into<String>, message: impl Into<String>) -> BackupError {
    BackupError::Contents {
        field: field.into(),
        message: message.into(),
    }
}

/// Read everything a backup holds from the store and the certificate files.
/// Blocking.
pub(crate) fn collect(
    store: &Store,
    certificates: Option<&Certificates>,
    network: bool,
) -> Result<Snapshot, BackupError> {
    let certificate = match certificates {
        Some(certs) => {
            let (certificate, key, generated) = certs.pem_pair()?;
            Some(CertificatePem {
                certificate,
                key,
                generated,
            })
        }
        None => None,
    };
    collect_with(store, certificate, network)
}

/// [`collect`] with the certificate already read.
fn collect_with(
    store: &Store,
    certificate: Option<CertificatePem>,
    network: bool,
) -> Result<Snapshot, BackupError> {
    let setting = |key: &str| -> Result<Option<serde_json::Value>, StoreError> {
        Ok(store
            .setting(key)?
            .and_then(|text| serde_json::from_str(&text).ok()))
    };
    Ok(Snapshot {
        format: PAYLOAD_FORMAT,
        made_at: crate::clock::now_rfc3339(),
        poolgate_version: env!("POOLGATE_VERSION").to_owned(),
        appliance_id: store.setting("appliance_id")?.unwrap_or_default(),
        config_versions: store.config_history()?,
        admin_states: store.admin_history()?,
        credentials: store.credentials()?,
        certificate,
        ca_bundles: store
            .ca_bundles()?
            .into_iter()
            .map(|(name, pem)| CaBundlePem { name, pem })
            .collect(),
        licences: store.licences()?,
        network: if network { setting(NETWORK_KEY)? } else { None },
        vrrp: if network { setting(VRRP_KEY)? } else { None },
    })
}

/// The archive of `snapshot` under `passphrase`.
pub(crate) fn seal(snapshot: &Snapshot, passphrase: &str) -> Result<Vec<u8>, BackupError> {
    let payload = serde_json::to_vec(snapshot).expect("a snapshot serialises");
    Ok(format::seal(
        &payload,
        passphrase,
        format::KdfCost::DEFAULT,
    )?)
}

/// Open and authenticate an archive, and read its snapshot.
pub(crate) fn open(archive: &[u8], passphrase: &str) -> Result<Snapshot, BackupError> {
    let payload = format::open(archive, passphrase)?;
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version = serde_json::from_slice(&payload)
        .map_err(|e| contents("archive", format!("not a backup payload: {e}")))?;
    if version.format != PAYLOAD_FORMAT {
        return Err(contents(
            "archive",
            format!(
                "payload format {} is not one this poolgate reads ({PAYLOAD_FORMAT}); upgrade poolgate first",
                version.format
            ),
        ));
    }
    serde_json::from_slice(&payload)
        .map_err(|e| contents("archive", format!("the payload does not read: {e}")))
}

/// What a licence in an archive means for this appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct LicenceVerdict {
    pub license_id: String,
    pub customer: Option<String>,
    /// Installed by the restore (it verifies for this appliance, or has
    /// only expired).
    pub restored: bool,
    /// The appliance the licence is bound to, when it is another one.
    pub bound_to: Option<String>,
    pub message: String,
}

/// A checked snapshot, ready to be applied.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub snapshot: Snapshot,
    /// The newest config with this appliance's `[listen]` (version 0: the
    /// archive has none).
    pub version: i64,
    pub config: Option<Arc<Config>>,
    pub admin: BTreeMap<config::MemberKey, AdminState>,
    pub bundles: CaBundles,
    pub certificate: Option<CertificateInfo>,
    pub licences: Vec<LicenceVerdict>,
    /// This appliance's `[listen]` (or its admin address) was kept where
    /// the archive's differs.
    pub listen_differs: bool,
}

/// What of this appliance's `[listen]` a restore keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeepListen<'a> {
    /// All of it: the appliance has a config of its own, with its addresses.
    All(&'a Config),
    /// Only the admin listener (a fresh appliance taking over from the one
    /// backed up: DNS and SIP listen where they did there, while the admin
    /// keeps reaching the UI where it is now).
    Admin(&'a Config),
    /// Nothing (a console restore into a data directory without a config).
    Nothing,
}

impl<'a> KeepListen<'a> {
    /// For the config in force: all of it if one is stored, else the admin.
    pub(crate) fn of(desired: &'a crate::control::Desired) -> Self {
        if desired.stored() {
            Self::All(&desired.config)
        } else {
            Self::Admin(&desired.config)
        }
    }
}

/// Check everything in `snapshot` against this appliance, keeping what
/// `keep` says of its `[listen]`. Writes nothing. Blocking (the licensing
/// clock).
pub(crate) fn plan(
    snapshot: Snapshot,
    keep: KeepListen<'_>,
    licensing: &Licensing,
) -> Result<Plan, BackupError> {
    let mut bundles = CaBundles::new();
    for bundle in &snapshot.ca_bundles {
        let parsed = ca::parse(&bundle.name, &bundle.pem)
            .map_err(|problem| contents(format!("ca_bundles.{}", bundle.name), problem))?;
        bundles.insert(bundle.name.clone(), Arc::new(parsed));
    }
    let mut ids = BTreeSet::new();
    for v in &snapshot.config_versions {
        if v.id <= 0 || !ids.insert(v.id) {
            return Err(contents(
                "config_versions",
                format!("version {} is listed twice or is not positive", v.id),
            ));
        }
    }
    let (version, config, listen_differs) =
        match snapshot.config_versions.iter().max_by_key(|v| v.id) {
            None => (0, None, false),
            Some(latest) => {
                let name = format!("backup config version {}", latest.id);
                let archived = config::from_toml(&latest.toml, &name)
                    .map_err(|e| contents("config", e.to_string()))?;
                let mut file = archived.source().clone();
                let archived_listen = file.listen.clone();
                match keep {
                    KeepListen::All(own) => file.listen = own.source().listen.clone(),
                    KeepListen::Admin(own) => {
                        file.listen.admin = own.source().listen.admin.clone();
                    }
                    KeepListen::Nothing => {}
                }
                let differs = file.listen != archived_listen;
                let config = config::from_toml(&config::file_to_toml(&file), &name)
                    .map_err(|e| contents("config", e.to_string()))?;
                let missing = ca::missing(&config, &bundles);
                if let Some(problem) = missing.first() {
                    return Err(contents(
                        format!("config.{}", problem.path),
                        problem.message.clone(),
                    ));
                }
                (latest.id, Some(Arc::new(config)), differs)
            }
        };
    let mut admin = BTreeMap::new();
    for row in &snapshot.admin_states {
        let state = AdminState::parse(&row.state).ok_or_else(|| {
            contents(
                format!("admin_states.{}.{}", row.pool, row.member),
                format!("{:?} is not an admin state", row.state),
            )
        })?;
        admin.insert((row.pool.clone(), row.member.clone()), state);
    }
    for user in &snapshot.credentials.users {
        if !crate::store::valid_username(&user.username) {
            return Err(contents(
                "users",
                format!("{:?} is not a user name poolgate accepts", user.username),
            ));
        }
    }
    if let Some(token) = snapshot.credentials.tokens.iter().find(|t| {
        !snapshot
            .credentials
            .users
            .iter()
            .any(|u| u.username == t.username)
    }) {
        return Err(contents(
            "tokens",
            format!(
                "API token {:?} belongs to no user in the archive",
                token.name
            ),
        ));
    }
    let certificate = match &snapshot.certificate {
        Some(pem) => Some(
            crate::certs::check_pair(&pem.certificate, &pem.key).map_err(|problem| {
                contents(
                    format!("certificate.{}", problem.field()),
                    problem.to_string(),
                )
            })?,
        ),
        None => None,
    };
    let mut licences = Vec::new();
    for row in &snapshot.licences {
        licences.push(licence_verdict(row, licensing)?);
    }
    Ok(Plan {
        snapshot,
        version,
        config,
        admin,
        bundles,
        certificate,
        licences,
        listen_differs,
    })
}

fn licence_verdict(row: &LicenceRow, licensing: &Licensing) -> Result<LicenceVerdict, BackupError> {
    let customer = licensing.decode(&row.text).ok().map(|l| l.customer);
    let verdict = |restored, bound_to, message: String| LicenceVerdict {
        license_id: row.licence_id.clone(),
        customer: customer.clone(),
        restored,
        bound_to,
        message,
    };
    Ok(match licensing.check(&row.text)? {
        Ok(_) => verdict(
            true,
            None,
            "restored; it is bound to this appliance".to_owned(),
        ),
        Err(LicenceError::Expired(when)) => {
            verdict(true, None, format!("restored; it expired on {when}"))
        }
        Err(LicenceError::WrongAppliance { licensed, actual }) => verdict(
            false,
            Some(licensed.clone()),
            format!(
                "not installed: it is bound to appliance {licensed}, and this is {actual}. Ask the vendor to re-issue licence {} for appliance {actual} (or re-activate it), then activate it under Licence; until then this appliance keeps its own licence or evaluation",
                row.licence_id
            ),
        ),
        Err(other) => verdict(false, None, format!("not installed: {other}")),
    })
}

impl Plan {
    /// The store rows a restore writes: the newest version's TOML with this
    /// appliance's `[listen]`, so a restart reads what is in force.
    pub(crate) fn rows(&self) -> Restore {
        let s = &self.snapshot;
        let mut versions = s.config_versions.clone();
        versions.sort_by_key(|v| v.id);
        if let (Some(last), Some(config)) = (versions.last_mut(), &self.config) {
            last.toml = config::to_toml(config);
        }
        let licences = s
            .licences
            .iter()
            .filter(|row| {
                self.licences
                    .iter()
                    .any(|v| v.restored && v.license_id == row.licence_id)
            })
            .cloned()
            .collect();
        let other: Vec<&LicenceVerdict> = self
            .licences
            .iter()
            .filter(|v| v.bound_to.is_some())
            .collect();
        let other_licences =
            (!other.is_empty()).then(|| serde_json::to_string(&other).expect("verdicts serialise"));
        Restore {
            other_licences,
            versions,
            admin: s.admin_states.clone(),
            credentials: s.credentials.clone(),
            ca_bundles: s
                .ca_bundles
                .iter()
                .map(|b| (b.name.clone(), b.pem.clone()))
                .collect(),
            licences,
            summary: format!(
                "config version {} from appliance {} (made {})",
                self.version, s.appliance_id, s.made_at
            ),
        }
    }
}

/// What this appliance has now, for a preview.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub version: i64,
    pub admin: BTreeMap<config::MemberKey, AdminState>,
    pub credentials: Credentials,
    pub certificate: Option<CertificateInfo>,
    pub ca_bundles: Vec<String>,
    pub licence_id: Option<String>,
    pub appliance_id: String,
}

/// One member whose admin state a restore changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct AdminChange {
    pub pool: String,
    pub member: String,
    /// `null`: the member is not in this appliance's config.
    pub now: Option<String>,
    /// `null`: the member is not in the archive's config.
    pub restored: Option<String>,
}

/// What a restore would change (`POST /api/v1/system/restore/preview`,
/// and the answer of the restore itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct PreviewBody {
    pub made_at: String,
    pub made_by_version: String,
    /// The appliance the backup was made on.
    pub from_appliance: String,
    pub this_appliance: String,
    /// Whether the backup comes from another appliance (replacement hardware).
    pub other_appliance: bool,
    pub config_version_now: i64,
    pub config_version_restored: i64,
    pub config_versions_in_archive: usize,
    pub admin_states: Vec<AdminChange>,
    pub users_added: Vec<String>,
    pub users_removed: Vec<String>,
    /// Users in both whose password (hash) differs.
    pub users_changed: Vec<String>,
    pub api_tokens_now: usize,
    pub api_tokens_restored: usize,
    pub certificate_now: Option<String>,
    pub certificate_restored: Option<String>,
    pub certificate_subject_restored: Option<String>,
    pub ca_bundles_now: Vec<String>,
    pub ca_bundles_restored: Vec<String>,
    pub licence_now: Option<String>,
    pub licences: Vec<LicenceVerdict>,
    /// This appliance keeps its own `[listen]` section where the archive's
    /// differs (an appliance with a config of its own keeps all of it; a
    /// fresh one keeps its admin address and takes the archive's DNS and SIP
    /// listeners): change it in the config afterwards if wanted.
    pub listen_kept: bool,
    /// The archive holds network (or VRRP) settings: never applied by a
    /// restore; they are in `network_settings`/`vrrp_settings` for the
    /// network page's safe apply.
    pub network_settings: Option<serde_json::Value>,
    pub vrrp_settings: Option<serde_json::Value>,
    /// Every session ends (this one too): log in again afterwards.
    pub sessions_end: bool,
}

/// What applying `plan` would change on an appliance that has `current`.
pub(crate) fn preview(plan: &Plan, current: &Current) -> PreviewBody {
    let s = &plan.snapshot;
    let names = |c: &Credentials| -> BTreeMap<String, String> {
        c.users
            .iter()
            .map(|u| (u.username.clone(), u.password_hash.clone()))
            .collect()
    };
    let (now_users, new_users) = (names(&current.credentials), names(&s.credentials));
    let mut admin_states = Vec::new();
    let keys: BTreeSet<_> = current.admin.keys().chain(plan.admin.keys()).collect();
    for key in keys {
        let now = current.admin.get(key).map(|a| a.as_str().to_owned());
        let restored = plan.admin.get(key).map(|a| a.as_str().to_owned());
        if now != restored {
            admin_states.push(AdminChange {
                pool: key.0.clone(),
                member: key.1.clone(),
                now,
                restored,
            });
        }
    }
    PreviewBody {
        made_at: s.made_at.clone(),
        made_by_version: s.poolgate_version.clone(),
        from_appliance: s.appliance_id.clone(),
        this_appliance: current.appliance_id.clone(),
        other_appliance: s.appliance_id != current.appliance_id,
        config_version_now: current.version,
        config_version_restored: plan.version,
        config_versions_in_archive: s.config_versions.len(),
        admin_states,
        users_added: new_users
            .keys()
            .filter(|u| !now_users.contains_key(*u))
            .cloned()
            .collect(),
        users_removed: now_users
            .keys()
            .filter(|u| !new_users.contains_key(*u))
            .cloned()
            .collect(),
        users_changed: new_users
            .iter()
            .filter(|(u, hash)| now_users.get(*u).is_some_and(|h| h != *hash))
            .map(|(u, _)| u.clone())
            .collect(),
        api_tokens_now: current.credentials.tokens.len(),
        api_tokens_restored: s.credentials.tokens.len(),
        certificate_now: current
            .certificate
            .as_ref()
            .map(|c| c.sha256_fingerprint.clone()),
        certificate_restored: plan
            .certificate
            .as_ref()
            .map(|c| c.sha256_fingerprint.clone()),
        certificate_subject_restored: plan.certificate.as_ref().map(|c| c.subject.clone()),
        ca_bundles_now: current.ca_bundles.clone(),
        ca_bundles_restored: s.ca_bundles.iter().map(|b| b.name.clone()).collect(),
        licence_now: current.licence_id.clone(),
        licences: plan.licences.clone(),
        listen_kept: plan.listen_differs,
        network_settings: s.network.clone(),
        vrrp_settings: s.vrrp.clone(),
        sessions_end: true,
    }
}

#[cfg(test)]
mod tests;
