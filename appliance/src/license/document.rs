//! The licence document, pure: its format, signing and verification. No
//! clock (the caller passes `now`), no I/O.
//!
//! Format: `PGLIC1.<payload>.<signature>`, both parts base64url without
//! padding. The payload is JSON; the signature is Ed25519 over the exact
//! payload bytes. Nothing in the payload is trusted before the signature
//! verifies against one of the known vendor keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

const PREFIX: &str = "PGLIC1";

/// What a licence grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Licence {
    pub id: String,
    pub customer: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued: OffsetDateTime,
    /// Not valid before this (defaults to `issued`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// `None`: perpetual.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// The appliance id shown in the UI, generated on its first start.
    pub appliance_id: String,
    pub limits: Limits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `None`: unlimited.
    #[serde(default)]
    pub virtual_services: Option<u32>,
    /// Pool members across all pools; `None`: unlimited.
    #[serde(default)]
    pub members: Option<u32>,
    #[serde(default)]
    pub features: Vec<String>,
}

/// Why a licence text was not accepted, in words for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenceError {
    #[error("this is not a poolgate licence (it should start with {PREFIX}.)")]
    NotALicence,
    #[error("the licence text is damaged or incomplete; paste it again exactly as you received it")]
    Malformed,
    #[error(
        "the licence signature is not valid: the text was changed or it was not issued by the vendor"
    )]
    BadSignature,
    #[error("this licence is for appliance {licensed}, but this appliance is {actual}")]
    WrongAppliance { licensed: String, actual: String },
    #[error("this licence is not valid before {0}")]
    NotYetValid(String),
    #[error("this licence expired on {0}")]
    Expired(String),
}

/// Sign a licence (vendor side).
pub fn sign(licence: &Licence, key: &SigningKey) -> String {
    let payload = serde_json::to_vec(licence).expect("a licence serialises to JSON");
    let signature = key.sign(&payload);
    format!(
        "{PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// Check signature and format only: who signed it and what it says.
pub(crate) fn decode(text: &str, keys: &[VerifyingKey]) -> Result<Licence, LicenceError> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut parts = text.split('.');
    if parts.next() != Some(PREFIX) {
        return Err(LicenceError::NotALicence);
    }
    let (Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(LicenceError::Malformed);
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| LicenceError::Malformed)?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(LicenceError::Malformed)?;
    let signature = Signature::from_bytes(&signature);
    if !keys
        .iter()
        .any(|key| key.verify_strict(&payload, &signature).is_ok())
    {
        return Err(LicenceError::BadSignature);
    }
    serde_json::from_slice(&payload).map_err(|_| LicenceError::Malformed)
}

/// Decode and check it applies to this appliance now.
pub fn verify(
    text: &str,
    keys: &[VerifyingKey],
    appliance_id: &str,
    now: OffsetDateTime,
) -> Result<Licence, LicenceError> {
    let licence = decode(text, keys)?;
    if licence.appliance_id != appliance_id {
        return Err(LicenceError::WrongAppliance {
            licensed: licence.appliance_id,
            actual: appliance_id.to_owned(),
        });
    }
    let not_before = licence.not_before.unwrap_or(licence.issued);
    if now < not_before {
        return Err(LicenceError::NotYetValid(crate::clock::rfc3339(not_before)));
    }
    if let Some(expires) = licence.expires
        && now >= expires
    {
        return Err(LicenceError::Expired(crate::clock::rfc3339(expires)));
    }
    Ok(licence)
}

/// Parse a verifying key written as 64 hex digits.
pub fn parse_key(hex: &str) -> Option<VerifyingKey> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    VerifyingKey::from_bytes(&bytes).ok()
}

pub fn key_hex(key: &VerifyingKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn licence(now: OffsetDateTime) -> Licence {
        Licence {
            id: "L-1".into(),
            customer: "Contoso".into(),
            issued: now - Duration::days(1),
            not_before: None,
            expires: Some(now + Duration::days(365)),
            appliance_id: "abc".into(),
            limits: Limits {
                virtual_services: Some(2),
                members: Some(10),
                features: vec!["ha".into()],
            },
        }
    }

    #[test]
    fn a_signed_licence_verifies() {
        let now = OffsetDateTime::now_utc();
        let text = sign(&licence(now), &key(1));
        let got = verify(
            &text,
            &[key(9).verifying_key(), key(1).verifying_key()],
            "abc",
            now,
        )
        .expect("valid");
        assert_eq!(got, licence(now));
        // Line breaks from an e-mail client do not matter.
        let wrapped: String = text
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i % 60 == 59).then_some('\n').into_iter().chain([c]))
            .collect();
        assert!(verify(&wrapped, &[key(1).verifying_key()], "abc", now).is_ok());
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let now = OffsetDateTime::now_utc();
        let text = sign(&licence(now), &key(1));
        let keys = [key(1).verifying_key()];
        for i in 0..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            if tampered
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                == text
            {
                continue;
            }
            assert!(
                verify(&tampered, &keys, "abc", now).is_err(),
                "byte {i} flipped still verifies"
            );
        }
        for len in 0..text.len() {
            assert!(
                verify(&text[..len], &keys, "abc", now).is_err(),
                "truncated to {len} verifies"
            );
        }
    }

    #[test]
    fn wrong_key_and_wrong_appliance_are_named() {
        let now = OffsetDateTime::now_utc();
        let text = sign(&licence(now), &key(1));
        assert_eq!(
            verify(&text, &[key(2).verifying_key()], "abc", now),
            Err(LicenceError::BadSignature)
        );
        assert!(matches!(
            verify(&text, &[key(1).verifying_key()], "other", now),
            Err(LicenceError::WrongAppliance { .. })
        ));
        assert_eq!(
            verify("hello", &[key(1).verifying_key()], "abc", now),
            Err(LicenceError::NotALicence)
        );
    }

    #[test]
    fn validity_boundaries() {
        let now = OffsetDateTime::now_utc();
        let lic = licence(now);
        let text = sign(&lic, &key(1));
        let keys = [key(1).verifying_key()];
        let expires = lic.expires.expect("expires");
        assert!(verify(&text, &keys, "abc", expires - Duration::seconds(1)).is_ok());
        assert!(matches!(
            verify(&text, &keys, "abc", expires),
            Err(LicenceError::Expired(_))
        ));
        assert!(verify(&text, &keys, "abc", lic.issued).is_ok());
        assert!(matches!(
            verify(&text, &keys, "abc", lic.issued - Duration::seconds(1)),
            Err(LicenceError::NotYetValid(_))
        ));
        let perpetual = Licence {
            expires: None,
            ..lic
        };
        let text = sign(&perpetual, &key(1));
        assert!(verify(&text, &keys, "abc", now + Duration::days(36_500)).is_ok());
    }

    #[test]
    fn keys_round_trip_as_hex() {
        let k = key(7).verifying_key();
        assert_eq!(parse_key(&key_hex(&k)), Some(k));
        assert_eq!(parse_key("zz"), None);
    }
}
