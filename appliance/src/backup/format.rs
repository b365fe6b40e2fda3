//! The backup archive on disk: a fixed header, then the payload sealed with
//! XChaCha20-Poly1305 under a key derived from the admin's passphrase with
//! Argon2id. Pure: no files, no clocks; unit tests beside it.
//!
//! Layout (all integers big-endian), version 1:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `PGBACKUP` |
//! | 8 | 2 | format version (1) |
//! | 10 | 4 | Argon2id memory cost, KiB |
//! | 14 | 4 | Argon2id time cost (passes) |
//! | 18 | 4 | Argon2id parallelism |
//! | 22 | 16 | salt |
//! | 38 | 24 | nonce |
//! | 62 | … | ciphertext of the gzip'd JSON payload, then the 16-byte tag |
//!
//! Invariants:
//! * The whole header is the AEAD's associated data: a changed byte
//!   anywhere, header or ciphertext, fails the tag, and a wrong passphrase
//!   fails it the same way. Nothing of the payload is read before the tag
//!   has been checked.
//! * A header's KDF costs are bounded ([`MAX_MEMORY_KIB`], [`MAX_PASSES`],
//!   [`MAX_LANES`]) before any work: a crafted archive cannot make the
//!   appliance spend gigabytes deriving a key. An archive is at most
//!   [`MAX_ARCHIVE_BYTES`], and its payload at most [`MAX_PAYLOAD_BYTES`]
//!   once decompressed.
//! * A later format is a new version number; this version reads version 1
//!   and names any other instead of guessing.

use std::io::{Read, Write};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub(crate) const MAGIC: &[u8; 8] = b"PGBACKUP";
pub(crate) const VERSION: u16 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
pub(crate) const HEADER_LEN: usize = 8 + 2 + 12 + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// The largest archive accepted for a restore, and produced by a backup.
pub const MAX_ARCHIVE_BYTES: usize = 32 * 1024 * 1024;
/// The largest payload once decompressed.
pub(crate) const MAX_PAYLOAD_BYTES: u64 = 128 * 1024 * 1024;
/// The shortest passphrase a backup is made with.
pub const MIN_PASSPHRASE_LEN: usize = 10;
/// KDF costs a header may ask for at most.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
const MAX_PASSES: u32 = 10;
const MAX_LANES: u32 = 8;

/// Argon2id costs. New archives use [`KdfCost::DEFAULT`]: 64 MiB, 3 passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KdfCost {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl KdfCost {
    pub(crate) const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        passes: 3,
        lanes: 1,
    };
}

/// Why an archive cannot be made or opened. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the passphrase must be at least {MIN_PASSPHRASE_LEN} characters")]
    WeakPassphrase,
    #[error("not a poolgate backup (it does not start with PGBACKUP)")]
    NotABackup,
    #[error("the archive is cut short ({0} bytes); download the backup again")]
    Truncated(usize),
    #[error("the archive is larger than {} MiB", MAX_ARCHIVE_BYTES / (1024 * 1024))]
    TooLarge,
    #[error(
        "backup format version {0} is newer than this poolgate reads (version {VERSION}); upgrade poolgate first"
    )]
    UnknownVersion(u16),
    #[error(
        "the archive's header asks for key derivation costs out of bounds; it was not made by poolgate"
    )]
    KdfBounds,
    #[error(
        "wrong passphrase, or the archive was changed since it was made (its authentication tag does not match)"
    )]
    Authentication,
    #[error("the archive's contents are unreadable: {0}")]
    Payload(String),
    #[error("key derivation: {0}")]
    Kdf(String),
}

fn derive_key(passphrase: &str, salt: &[u8], cost: KdfCost) -> Result<[u8; 32], FormatError> {
    let params = argon2::Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32))
        .map_err(|e| FormatError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| FormatError::Kdf(e.to_string()))?;
    Ok(key)
}

/// Seal `payload` (the JSON document) under `passphrase`.
pub(crate) fn seal(
    payload: &[u8],
    passphrase: &str,
    cost: KdfCost,
) -> Result<Vec<u8>, FormatError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_LEN {
        return Err(FormatError::WeakPassphrase);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(payload)
        .and_then(|()| gz.flush())
        .map_err(|e| FormatError::Payload(e.to_string()))?;
    let compressed = gz
        .finish()
        .map_err(|e| FormatError::Payload(e.to_string()))?;
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let mut header = Vec::with_capacity(HEADER_LEN + compressed.len() + TAG_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_be_bytes());
    header.extend_from_slice(&cost.memory_kib.to_be_bytes());
    header.extend_from_slice(&cost.passes.to_be_bytes());
    header.extend_from_slice(&cost.lanes.to_be_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    debug_assert_eq!(header.len(), HEADER_LEN);
    let key = derive_key(passphrase, &salt, cost)?;
    let cipher = XChaCha20Poly1305::new(&key.into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &compressed,
                aad: &header,
            },
        )
        .map_err(|_| FormatError::Payload("encryption failed".into()))?;
    header.extend_from_slice(&sealed);
    if header.len() > MAX_ARCHIVE_BYTES {
        return Err(FormatError::TooLarge);
    }
    Ok(header)
}

/// The header fields, checked, without any key work.
fn header(archive: &[u8]) -> Result<(KdfCost, &[u8], &[u8]), FormatError> {
    if archive.len() > MAX_ARCHIVE_BYTES {
        return Err(FormatError::TooLarge);
    }
    if archive.len() < MAGIC.len() || &archive[..MAGIC.len()] != MAGIC {
        return Err(FormatError::NotABackup);
    }
    if archive.len() < HEADER_LEN + TAG_LEN {
        return Err(FormatError::Truncated(archive.len()));
    }
    let be32 = |at: usize| u32::from_be_bytes(archive[at..at + 4].try_into().expect("4 bytes"));
    let version = u16::from_be_bytes([archive[8], archive[9]]);
    if version != VERSION {
        return Err(FormatError::UnknownVersion(version));
    }
    let cost = KdfCost {
        memory_kib: be32(10),
        passes: be32(14),
        lanes: be32(18),
    };
    if cost.memory_kib > MAX_MEMORY_KIB
        || cost.passes > MAX_PASSES
        || cost.lanes > MAX_LANES
        || cost.passes == 0
        || cost.lanes == 0
        || cost.memory_kib < 8 * cost.lanes
    {
        return Err(FormatError::KdfBounds);
    }
    Ok((cost, &archive[22..38], &archive[38..HEADER_LEN]))
}

/// Check and open an archive: the JSON payload, only once its tag verified.
pub(crate) fn open(archive: &[u8], passphrase: &str) -> Result<Vec<u8>, FormatError> {
    let (cost, salt, nonce) = header(archive)?;
    let key = derive_key(passphrase, salt, cost)?;
    let cipher = XChaCha20Poly1305::new(&key.into());
    let compressed = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: &archive[HEADER_LEN..],
                aad: &archive[..HEADER_LEN],
            },
        )
        .map_err(|_| FormatError::Authentication)?;
    let mut payload = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .take(MAX_PAYLOAD_BYTES + 1)
        .read_to_end(&mut payload)
        .map_err(|e| FormatError::Payload(e.to_string()))?;
    if payload.len() as u64 > MAX_PAYLOAD_BYTES {
        return Err(FormatError::Payload(format!(
            "larger than {} MiB unpacked",
            MAX_PAYLOAD_BYTES / (1024 * 1024)
        )));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap costs: the format is the same, the tests stay fast.
    const CHEAP: KdfCost = KdfCost {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };
    const PASS: &str = "correct horse battery";

    #[test]
    fn what_is_sealed_opens_with_the_passphrase() {
        let payload = br#"{"format":1,"hello":"world"}"#;
        let archive = seal(payload, PASS, CHEAP).expect("seal");
        assert_eq!(&archive[..8], MAGIC);
        assert_eq!(&archive[8..10], &[0, 1]);
        assert_eq!(open(&archive, PASS).expect("open"), payload);
        // A fresh salt and nonce each time.
        assert_ne!(seal(payload, PASS, CHEAP).expect("seal"), archive);
    }

    #[test]
    fn the_payload_is_not_readable_in_the_archive() {
        let secret = b"password_hash: $argon2id$v=19$secret-marker-0123456789";
        let archive = seal(secret, PASS, CHEAP).expect("seal");
        assert!(!archive.windows(13).any(|w| w == b"secret-marker"));
    }

    #[test]
    fn a_wrong_passphrase_is_refused() {
        let archive = seal(b"{}", PASS, CHEAP).expect("seal");
        assert_eq!(
            open(&archive, "correct horse battery!"),
            Err(FormatError::Authentication)
        );
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let archive = seal(b"{\"a\":1}", PASS, CHEAP).expect("seal");
        for at in 0..archive.len() {
            let mut bad = archive.clone();
            bad[at] ^= 0x01;
            let error = open(&bad, PASS).expect_err("a changed byte never opens");
            assert!(
                matches!(
                    error,
                    FormatError::Authentication
                        | FormatError::NotABackup
                        | FormatError::UnknownVersion(_)
                        | FormatError::KdfBounds
                ),
                "byte {at}: {error}"
            );
        }
    }

    #[test]
    fn short_foreign_and_future_archives_are_named() {
        let archive = seal(b"{}", PASS, CHEAP).expect("seal");
        assert_eq!(open(b"PK\x03\x04zip", PASS), Err(FormatError::NotABackup));
        assert_eq!(open(&archive[..40], PASS), Err(FormatError::Truncated(40)));
        let mut future = archive.clone();
        future[9] = 2;
        assert_eq!(open(&future, PASS), Err(FormatError::UnknownVersion(2)));
        let too_big = vec![0u8; MAX_ARCHIVE_BYTES + 1];
        assert_eq!(open(&too_big, PASS), Err(FormatError::TooLarge));
    }

    #[test]
    fn a_header_cannot_ask_for_unbounded_key_work() {
        let mut archive = seal(b"{}", PASS, CHEAP).expect("seal");
        archive[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(open(&archive, PASS), Err(FormatError::KdfBounds));
    }

    #[test]
    fn a_short_passphrase_makes_no_backup() {
        assert_eq!(
            seal(b"{}", "short", CHEAP),
            Err(FormatError::WeakPassphrase)
        );
    }

    #[test]
    fn the_default_cost_is_within_the_bounds_the_reader_accepts() {
        let archive = seal(b"{}", PASS, KdfCost::DEFAULT).expect("seal");
        assert_eq!(open(&archive, PASS).expect("open"), b"{}");
    }
}
