//! Licensing: offline activation with an Ed25519-signed licence, a 30-day
//! evaluation on a fresh appliance, and enforcement that only ever blocks
//! config changes — never traffic.
//!
//! Invariants:
//! * Only a licence that verifies for this appliance now is stored; a bad
//!   one is rejected with a reason and the previous one stays in force.
//! * Time only moves forward for licensing: the latest time seen is kept in
//!   the store, so turning the clock back cannot extend an evaluation.
//! * Verifying keys are compiled in (`POOLGATE_LICENSE_KEYS` at build time,
//!   comma-separated hex). Builds with the `test-license-keys` feature also
//!   read keys from the file named by `POOLGATE_TEST_LICENSE_KEYS`, so tests
//!   mint their own licences. The vendor's private key is never here.

pub mod document;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

pub(crate) use document::{Licence, LicenceError, Limits};

use crate::config::Config;
use crate::store::{Store, StoreError};

pub(crate) const EVALUATION_DAYS: i64 = 30;

/// The vendor keys this build trusts.
pub fn vendor_keys() -> Vec<VerifyingKey> {
    let mut keys: Vec<VerifyingKey> = option_env!("POOLGATE_LICENSE_KEYS")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.trim().is_empty())
        .filter_map(document::parse_key)
        .collect();
    #[cfg(feature = "test-license-keys")]
    if let Some(path) = std::env::var_os("POOLGATE_TEST_LICENSE_KEYS")
        && let Ok(text) = std::fs::read_to_string(path)
    {
        keys.extend(text.lines().filter_map(document::parse_key));
    }
    keys.dedup();
    keys
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenceState {
    Evaluation,
    Licensed,
    Expired,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub virtual_services: u32,
    pub members: u32,
}

impl Usage {
    pub(crate) fn of(config: &Config) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            virtual_services: count(config.virtual_services.len()),
            members: count(config.pools.iter().map(|p| p.members.len()).sum()),
        }
    }
}

/// Licence status as the API and UI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub state: LicenceState,
    pub appliance_id: String,
    /// Days of evaluation or licence left; `None` when perpetual or over.
    pub days_left: Option<i64>,
    pub customer: Option<String>,
    pub license_id: Option<String>,
    pub expires: Option<String>,
    pub limits: Limits,
    /// A sentence for the banner.
    pub message: String,
}

impl Status {
    /// Pure: the status from the stored licence text and the evaluation clock.
    pub(crate) fn compute(
        stored: Option<&str>,
        keys: &[VerifyingKey],
        appliance_id: &str,
        evaluation_started: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        let base = |state, message: String| Self {
            state,
            appliance_id: appliance_id.to_owned(),
            days_left: None,
            customer: None,
            license_id: None,
            expires: None,
            limits: Limits::default(),
            message,
        };
        let Some(text) = stored else {
            let ends = evaluation_started + Duration::days(EVALUATION_DAYS);
            if now < ends {
                // Whole days, rounded up: the last hours are still "1 day left".
                let days = ((ends - now).whole_seconds() + 86_399) / 86_400;
                return Self {
                    days_left: Some(days),
                    ..base(
                        LicenceState::Evaluation,
                        format!(
                            "Evaluation: {days} days left. Every feature is on; install a licence to keep changing the config after that."
                        ),
                    )
                };
            }
            return base(
                LicenceState::Expired,
                "The evaluation has ended. Traffic keeps flowing as configured; config changes are blocked until a licence is installed.".to_owned(),
            );
        };
        let with_licence = |status: Self, licence: &Licence| Self {
            customer: Some(licence.customer.clone()),
            license_id: Some(licence.id.clone()),
            expires: licence.expires.map(crate::clock::rfc3339),
            limits: licence.limits.clone(),
            ..status
        };
        match document::verify(text, keys, appliance_id, now) {
            Ok(licence) => {
                let days_left = licence.expires.map(|e| (e - now).whole_days());
                let message = match licence.expires {
                    Some(e) => format!(
                        "Licensed to {} until {}.",
                        licence.customer,
                        crate::clock::rfc3339(e)
                    ),
                    None => format!("Licensed to {}.", licence.customer),
                };
                with_licence(
                    Self {
                        days_left,
                        ..base(LicenceState::Licensed, message)
                    },
                    &licence,
                )
            }
            Err(error @ LicenceError::Expired(_)) => {
                let status = base(
                    LicenceState::Expired,
                    format!(
                        "{error}. Traffic keeps flowing as configured; config changes are blocked until a new licence is installed."
                    ),
                );
                match document::decode(text, keys) {
                    Ok(licence) => with_licence(status, &licence),
                    Err(_) => status,
                }
            }
            Err(error) => base(
                LicenceState::Invalid,
                format!(
                    "The installed licence is not valid: {error}. Traffic keeps flowing; config changes are blocked."
                ),
            ),
        }
    }

    /// Whether a change to `config` is allowed; the refusal names the limit.
    pub(crate) fn allows(&self, config: &Config) -> Result<(), String> {
        match self.state {
            LicenceState::Evaluation => Ok(()),
            LicenceState::Expired | LicenceState::Invalid => Err(self.message.clone()),
            LicenceState::Licensed => {
                let usage = Usage::of(config);
                if let Some(limit) = self.limits.virtual_services
                    && usage.virtual_services > limit
                {
                    return Err(format!(
                        "the licence allows {limit} virtual services; this config has {}",
                        usage.virtual_services
                    ));
                }
                if let Some(limit) = self.limits.members
                    && usage.members > limit
                {
                    return Err(format!(
                        "the licence allows {limit} pool members; this config has {}",
                        usage.members
                    ));
                }
                Ok(())
            }
        }
    }
}

const EVALUATION_STARTED: &str = "evaluation_started";
const LATEST_TIME_SEEN: &str = "latest_time_seen";

/// Licensing state kept in the store.
#[derive(Debug, Clone)]
pub struct Licensing {
    store: Store,
    keys: Vec<VerifyingKey>,
    appliance_id: String,
}

impl Licensing {
    pub fn new(
        store: Store,
        keys: Vec<VerifyingKey>,
        appliance_id: String,
    ) -> Result<Self, StoreError> {
        store.setting_or_insert(EVALUATION_STARTED, || {
            crate::clock::rfc3339(OffsetDateTime::now_utc())
        })?;
        let licensing = Self {
            store,
            keys,
            appliance_id,
        };
        licensing.now()?;
        Ok(licensing)
    }

    /// Now, never earlier than any time seen before (and remember it).
    pub(crate) fn now(&self) -> Result<OffsetDateTime, StoreError> {
        let real = OffsetDateTime::now_utc();
        let seen = self.stored_time(LATEST_TIME_SEEN)?;
        match seen {
            Some(seen) if seen >= real => Ok(seen),
            _ => {
                self.store
                    .set_setting(LATEST_TIME_SEEN, &crate::clock::rfc3339(real))?;
                Ok(real)
            }
        }
    }

    fn stored_time(&self, key: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.store.setting(key)?.and_then(|t| {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        }))
    }

    pub fn status(&self) -> Result<Status, StoreError> {
        let now = self.now()?;
        let started = self.stored_time(EVALUATION_STARTED)?.unwrap_or(now);
        let stored = self.store.current_licence()?;
        Ok(Status::compute(
            stored.as_deref(),
            &self.keys,
            &self.appliance_id,
            started,
            now,
        ))
    }

    /// This appliance's id (what a licence must be bound to).
    pub(crate) fn appliance_id(&self) -> &str {
        &self.appliance_id
    }

    /// Check a licence text (from a backup) as an activation would, storing
    /// nothing: the licence, or why this appliance cannot use it.
    pub(crate) fn check(&self, text: &str) -> Result<Result<Licence, LicenceError>, StoreError> {
        let now = self.now()?;
        Ok(document::verify(text, &self.keys, &self.appliance_id, now))
    }

    /// A licence's contents, signature checked but not its appliance or
    /// dates (to name what a licence bound elsewhere is).
    pub(crate) fn decode(&self, text: &str) -> Result<Licence, LicenceError> {
        document::decode(text, &self.keys)
    }

    /// Verify and store a licence; on error nothing changes.
    pub fn install(&self, text: &str) -> Result<Result<Licence, LicenceError>, StoreError> {
        let now = self.now()?;
        match document::verify(text, &self.keys, &self.appliance_id, now) {
            Ok(licence) => {
                let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                self.store
                    .install_licence(&licence.id, &licence.customer, &compact)?;
                Ok(Ok(licence))
            }
            Err(error) => Ok(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn licence(
        now: OffsetDateTime,
        expires: Option<OffsetDateTime>,
        members: Option<u32>,
    ) -> String {
        document::sign(
            &Licence {
                id: "L-7".into(),
                customer: "Contoso".into(),
                issued: now - Duration::hours(1),
                not_before: None,
                expires,
                appliance_id: "app".into(),
                limits: Limits {
                    virtual_services: Some(1),
                    members,
                    features: vec![],
                },
            },
            &key(),
        )
    }

    fn example() -> Config {
        let path =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
        crate::config::load(&path).expect("example")
    }

    #[test]
    fn evaluation_counts_down_then_blocks_changes_only() {
        let keys = [key().verifying_key()];
        let start = OffsetDateTime::now_utc();
        let fresh = Status::compute(None, &keys, "app", start, start);
        assert_eq!(fresh.state, LicenceState::Evaluation);
        assert_eq!(fresh.days_left, Some(30));
        assert!(fresh.allows(&example()).is_ok());
        let last_day = Status::compute(
            None,
            &keys,
            "app",
            start,
            start + Duration::days(29) + Duration::hours(23),
        );
        assert_eq!(
            (last_day.state, last_day.days_left),
            (LicenceState::Evaluation, Some(1))
        );
        let over = Status::compute(None, &keys, "app", start, start + Duration::days(30));
        assert_eq!(over.state, LicenceState::Expired);
        let refusal = over.allows(&example()).expect_err("blocked");
        assert!(refusal.contains("Traffic keeps flowing"), "{refusal}");
    }

    #[test]
    fn limits_name_what_is_exceeded() {
        let keys = [key().verifying_key()];
        let now = OffsetDateTime::now_utc();
        let text = licence(now, None, Some(2));
        let status = Status::compute(Some(&text), &keys, "app", now, now);
        assert_eq!(status.state, LicenceState::Licensed);
        assert_eq!(status.customer.as_deref(), Some("Contoso"));
        let refusal = status.allows(&example()).expect_err("3 members > 2");
        assert!(refusal.contains("2 pool members"), "{refusal}");
        let text = licence(now, None, Some(3));
        assert!(
            Status::compute(Some(&text), &keys, "app", now, now)
                .allows(&example())
                .is_ok()
        );
    }

    #[test]
    fn an_expired_licence_still_shows_who_it_was_for() {
        let keys = [key().verifying_key()];
        let now = OffsetDateTime::now_utc();
        let text = licence(now, Some(now + Duration::minutes(5)), None);
        let status = Status::compute(Some(&text), &keys, "app", now, now + Duration::minutes(5));
        assert_eq!(status.state, LicenceState::Expired);
        assert_eq!(status.customer.as_deref(), Some("Contoso"));
        let wrong = Status::compute(Some(&text), &keys, "cloned", now, now);
        assert_eq!(wrong.state, LicenceState::Invalid);
    }

    #[test]
    fn turning_the_clock_back_does_not_extend_the_evaluation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let licensing = Licensing::new(store.clone(), vec![key().verifying_key()], "app".into())
            .expect("licensing");
        // The appliance once saw a time 40 days ahead (the clock was later set back).
        let future = OffsetDateTime::now_utc() + Duration::days(40);
        store
            .set_setting(LATEST_TIME_SEEN, &crate::clock::rfc3339(future))
            .expect("set");
        assert!(licensing.now().expect("now") >= future);
        assert_eq!(
            licensing.status().expect("status").state,
            LicenceState::Expired
        );
    }

    #[test]
    fn a_rejected_licence_leaves_the_previous_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let licensing =
            Licensing::new(store, vec![key().verifying_key()], "app".into()).expect("licensing");
        let now = OffsetDateTime::now_utc();
        let good = licence(now, None, Some(5));
        assert!(licensing.install(&good).expect("store").is_ok());
        let mut tampered = good.clone();
        tampered.replace_range(10..11, if &good[10..11] == "A" { "B" } else { "A" });
        assert!(licensing.install(&tampered).expect("store").is_err());
        assert!(
            licensing
                .install(&good[..good.len() - 3])
                .expect("store")
                .is_err()
        );
        let status = licensing.status().expect("status");
        assert_eq!(status.state, LicenceState::Licensed);
        assert_eq!(status.limits.members, Some(5));
    }
}
