//! The upgrade bundle (`poolgate-<version>.pgup`): its format, signing, and
//! streaming verification. Pure: it reads from any `Read` and writes nowhere,
//! so the appliance can check a whole bundle before it writes a byte.
//!
//! Format (all of it, in this order):
//!
//! | bytes | what |
//! |---|---|
//! | 6 | magic `PGUP1\n` |
//! | 4 | manifest length, big-endian, 1..=64 KiB |
//! | n | manifest: JSON (`product`, `version`, `min_from_version`, `components`) |
//! | 64 | Ed25519 signature over `SIGNING_CONTEXT ‖ manifest` |
//! | … | each component's bytes, in manifest order, exactly `size` of each |
//!
//! and nothing after the last component.
//!
//! Invariants:
//! * The signature is checked on the raw manifest bytes before they are
//!   parsed; the manifest then names the SHA-256 and size of every payload,
//!   so one signature covers everything.
//! * A component's last bytes are handed out only once its whole hash has
//!   matched; a reader never holds more than one caller-sized buffer.
//! * Verifying keys are compiled in (`POOLGATE_UPGRADE_KEYS` at build time,
//!   comma-separated hex). Builds with the `test-upgrade-keys` feature also
//!   read keys from the file named by `POOLGATE_TEST_UPGRADE_KEYS`, so tests
//!   sign their own bundles. The vendor's private key is never here.

use std::io::{Read, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) const MAGIC: &[u8; 6] = b"PGUP1\n";
pub const PRODUCT: &str = "poolgate";
/// Domain separation: a signature made for something else (a licence) can
/// never pass as a bundle signature, even under the same key.
pub(crate) const SIGNING_CONTEXT: &[u8] = b"poolgate upgrade manifest v1\0";
pub(crate) const MAX_MANIFEST: usize = 64 * 1024;
pub const SIGNATURE_LEN: usize = 64;
/// The root file system image (squashfs) for the inactive slot.
pub const ROOT: &str = "root";
/// The unified kernel image for the ESP.
pub const UKI: &str = "uki";
/// Upper bounds well above any real image: a manifest cannot make the
/// appliance read or write without end.
pub(crate) const MAX_ROOT_SIZE: u64 = 16 << 30;
pub(crate) const MAX_UKI_SIZE: u64 = 1 << 30;
const HEADER_FIXED: usize = MAGIC.len() + 4;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a poolgate upgrade bundle (it does not start with the PGUP1 magic)")]
    NotABundle,
    #[error("the bundle is truncated ({0})")]
    Truncated(&'static str),
    #[error("the manifest length {0} is out of range (1 to {MAX_MANIFEST} bytes)")]
    ManifestSize(usize),
    #[error("the bundle is not signed")]
    Unsigned,
    #[error("this build trusts no upgrade keys, so it accepts no bundle")]
    NoKeys,
    #[error(
        "the signature does not verify with any trusted upgrade key (the bundle was altered, or signed by someone else)"
    )]
    BadSignature,
    #[error("the manifest is invalid: {0}")]
    Manifest(String),
    #[error("the bundle is for {found:?}, not {PRODUCT}")]
    WrongProduct { found: String },
    #[error(
        "component {name}: its SHA-256 does not match the signed manifest (the bundle was altered or corrupted)"
    )]
    HashMismatch { name: String },
    #[error("the bundle has data after its last component")]
    TrailingData,
    #[error(
        "the bundle is version {version}, not newer than the running {running}; downgrades and reinstalls are refused"
    )]
    NotNewer { version: String, running: String },
    #[error(
        "version {version} upgrades only from {min_from} or later; this appliance runs {running}: install {min_from} first"
    )]
    TooOld {
        version: String,
        min_from: String,
        running: String,
    },
    #[error("cannot read the bundle: {0}")]
    Io(#[source] std::io::Error),
}

/// The signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub product: String,
    pub version: String,
    /// The oldest running version this bundle may upgrade.
    pub min_from_version: String,
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
}

impl Manifest {
    /// The bundle's version (validated when the manifest was read).
    pub fn version(&self) -> Version {
        Version::parse(&self.version).unwrap_or_else(|_| Version::new(0, 0, 0))
    }

    pub(crate) fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Everything a manifest must say, apart from whether it applies here.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Manifest(m));
        if self.product != PRODUCT {
            return Err(BundleError::WrongProduct {
                found: self.product.clone(),
            });
        }
        if let Err(error) = Version::parse(&self.version) {
            return bad(format!("version {:?}: {error}", self.version));
        }
        if let Err(error) = Version::parse(&self.min_from_version) {
            return bad(format!(
                "min_from_version {:?}: {error}",
                self.min_from_version
            ));
        }
        let names: Vec<&str> = self.components.iter().map(|c| c.name.as_str()).collect();
        if names != [ROOT, UKI] {
            return bad(format!(
                "components must be [{ROOT:?}, {UKI:?}], found {names:?}"
            ));
        }
        for component in &self.components {
            let max = if component.name == ROOT {
                MAX_ROOT_SIZE
            } else {
                MAX_UKI_SIZE
            };
            if component.size == 0 || component.size > max {
                return bad(format!(
                    "component {}: size {} is out of range (1 to {max})",
                    component.name, component.size
                ));
            }
            if parse_sha256(&component.sha256).is_none() {
                return bad(format!(
                    "component {}: sha256 must be 64 lower-case hex digits",
                    component.name
                ));
            }
        }
        Ok(())
    }

    /// Whether this bundle may replace `running`: strictly newer, and
    /// `running` at least its minimum.
    pub(crate) fn check_upgrade(&self, running: &Version) -> Result<(), BundleError> {
        let version = self.version();
        if version <= *running {
            return Err(BundleError::NotNewer {
                version: version.to_string(),
                running: running.to_string(),
            });
        }
        let min_from = Version::parse(&self.min_from_version)
            .map_err(|error| BundleError::Manifest(format!("min_from_version: {error}")))?;
        if *running < min_from {
            return Err(BundleError::TooOld {
                version: version.to_string(),
                min_from: min_from.to_string(),
                running: running.to_string(),
            });
        }
        Ok(())
    }
}

/// The upgrade keys this build trusts.
pub(crate) fn upgrade_keys() -> Vec<VerifyingKey> {
    let mut keys: Vec<VerifyingKey> = option_env!("POOLGATE_UPGRADE_KEYS")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.trim().is_empty())
        .filter_map(crate::license::document::parse_key)
        .collect();
    #[cfg(feature = "test-upgrade-keys")]
    if let Some(path) = std::env::var_os("POOLGATE_TEST_UPGRADE_KEYS")
        && let Ok(text) = std::fs::read_to_string(path)
    {
        keys.extend(text.lines().filter_map(crate::license::document::parse_key));
    }
    keys.dedup();
    keys
}

pub(crate) fn sha256_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The length of the whole header (magic to signature) once `prefix` holds
/// its first 10 bytes; `None` while it holds fewer.
pub fn header_len(prefix: &[u8]) -> Result<Option<usize>, BundleError> {
    let magic_seen = prefix.len().min(MAGIC.len());
    if prefix[..magic_seen] != MAGIC[..magic_seen] {
        return Err(BundleError::NotABundle);
    }
    let Some(length) = prefix.get(MAGIC.len()..HEADER_FIXED) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(length.try_into().expect("four bytes"));
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length == 0 || length > MAX_MANIFEST {
        return Err(BundleError::ManifestSize(length));
    }
    Ok(Some(HEADER_FIXED + length + SIGNATURE_LEN))
}

/// Verify a complete header (exactly `header_len` bytes) and return its
/// manifest: signature first, then the manifest's content.
pub(crate) fn parse_header(bytes: &[u8], keys: &[VerifyingKey]) -> Result<Manifest, BundleError> {
    let Some(total) = header_len(bytes)? else {
        return Err(BundleError::Truncated("in the header"));
    };
    if bytes.len() < total {
        return Err(BundleError::Truncated("in the header"));
    }
    let manifest = &bytes[HEADER_FIXED..total - SIGNATURE_LEN];
    let signature: [u8; SIGNATURE_LEN] = bytes[total - SIGNATURE_LEN..total]
        .try_into()
        .expect("64 bytes");
    if signature.iter().all(|&b| b == 0) {
        return Err(BundleError::Unsigned);
    }
    if keys.is_empty() {
        return Err(BundleError::NoKeys);
    }
    let signature = Signature::from_bytes(&signature);
    let message = [SIGNING_CONTEXT, manifest].concat();
    if !keys
        .iter()
        .any(|key| key.verify(&message, &signature).is_ok())
    {
        return Err(BundleError::BadSignature);
    }
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|error| BundleError::Manifest(error.to_string()))?;
    manifest.validate()?;
    Ok(manifest)
}

/// The header bytes (magic, length, manifest, signature) of a bundle.
pub(crate) fn signed_header(manifest: &Manifest, key: &SigningKey) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).expect("a manifest serialises");
    let signature = key.sign(&[SIGNING_CONTEXT, &json].concat());
    let length = u32::try_from(json.len()).expect("a manifest is small");
    let mut out = Vec::with_capacity(HEADER_FIXED + json.len() + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// A component's manifest entry, from one pass over its bytes.
pub fn describe(name: &str, mut payload: impl Read) -> std::io::Result<Component> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = match payload.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(Component {
        name: name.to_owned(),
        sha256: sha256_hex(&hasher.finalize()),
        size,
    })
}

/// Write a signed bundle: header, then each payload (which must match the
/// manifest entry `describe` made of it).
pub fn write_bundle(
    mut out: impl Write,
    manifest: &Manifest,
    key: &SigningKey,
    payloads: &mut [&mut dyn Read],
) -> std::io::Result<()> {
    out.write_all(&signed_header(manifest, key))?;
    for (payload, component) in payloads.iter_mut().zip(&manifest.components) {
        let copied = std::io::copy(&mut payload.take(component.size), &mut out)?;
        if copied != component.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} changed while the bundle was written", component.name),
            ));
        }
    }
    out.flush()
}

/// Reads a bundle's components, checking each against the signed manifest.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    manifest: Manifest,
    /// Index of the component being read; `components.len()` once done.
    index: usize,
    remaining: u64,
    hasher: Sha256,
}

impl<R: Read> Reader<R> {
    /// Read and verify the header.
    pub fn open(mut inner: R, keys: &[VerifyingKey]) -> Result<Self, BundleError> {
        let mut header = vec![0u8; HEADER_FIXED];
        read_exact(&mut inner, &mut header, "in the header")?;
        let total = header_len(&header)?.expect("the fixed part is read");
        header.resize(total, 0);
        read_exact(&mut inner, &mut header[HEADER_FIXED..], "in the header")?;
        let manifest = parse_header(&header, keys)?;
        Ok(Self::after_header(inner, manifest))
    }

    /// Continue after a header verified elsewhere (`parse_header`).
    pub(crate) fn after_header(inner: R, manifest: Manifest) -> Self {
        let remaining = manifest.components.first().map_or(0, |c| c.size);
        Self {
            inner,
            manifest,
            index: 0,
            remaining,
            hasher: Sha256::new(),
        }
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next piece of the current component: `(component index, bytes
    /// in buf)`, or `None` at the end of the bundle. The piece that ends a
    /// component is returned only if the component's hash matched; the end
    /// is reported only if nothing follows the last component.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<Option<(usize, usize)>, BundleError> {
        let Some(component) = self.manifest.components.get(self.index) else {
            let mut extra = [0u8; 1];
            return match read_some(&mut self.inner, &mut extra)? {
                0 => Ok(None),
                _ => Err(BundleError::TrailingData),
            };
        };
        if buf.is_empty() {
            return Err(BundleError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty read buffer",
            )));
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = read_some(&mut self.inner, &mut buf[..want])?;
        if n == 0 {
            return Err(BundleError::Truncated("in a component"));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        let index = self.index;
        if self.remaining == 0 {
            let digest = std::mem::take(&mut self.hasher).finalize();
            if Some(<[u8; 32]>::from(digest)) != parse_sha256(&component.sha256) {
                return Err(BundleError::HashMismatch {
                    name: component.name.clone(),
                });
            }
            self.index += 1;
            self.remaining = self
                .manifest
                .components
                .get(self.index)
                .map_or(0, |c| c.size);
        }
        Ok(Some((index, n)))
    }

    /// Read to the end, checking everything; returns the manifest.
    pub fn verify_to_end(mut self) -> Result<Manifest, BundleError> {
        let mut buffer = vec![0u8; 1 << 16];
        // Each round consumes at least one byte of a bounded total.
        while self.read(&mut buffer)?.is_some() {}
        Ok(self.manifest)
    }
}

fn read_some(inner: &mut impl Read, buf: &mut [u8]) -> Result<usize, BundleError> {
    loop {
        match inner.read(buf) {
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(BundleError::Io(error)),
        }
    }
}

fn read_exact(inner: &mut impl Read, buf: &mut [u8], at: &'static str) -> Result<(), BundleError> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_some(inner, &mut buf[filled..])? {
            0 => return Err(BundleError::Truncated(at)),
            n => filled += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn manifest_for(root: &[u8], uki: &[u8]) -> Manifest {
        Manifest {
            product: PRODUCT.into(),
            version: "1.2.0".into(),
            min_from_version: "1.0.0".into(),
            components: vec![
                describe(ROOT, root).expect("hash"),
                describe(UKI, uki).expect("hash"),
            ],
        }
    }

    fn bundle_with(manifest: &Manifest, key: &SigningKey, root: &[u8], uki: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_bundle(
            &mut out,
            manifest,
            key,
            &mut [&mut &root[..], &mut &uki[..]],
        )
        .expect("write");
        out
    }

    fn sample() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let root: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let uki = b"MZ unified kernel image".to_vec();
        let bundle = bundle_with(&manifest_for(&root, &uki), &key(1), &root, &uki);
        (bundle, root, uki)
    }

    fn verify(bytes: &[u8], keys: &[VerifyingKey]) -> Result<Manifest, BundleError> {
        Reader::open(bytes, keys)?.verify_to_end()
    }

    #[test]
    fn a_good_bundle_verifies_and_streams_its_components() {
        let (bundle, root, uki) = sample();
        let keys = [key(9).verifying_key(), key(1).verifying_key()];
        let mut reader = Reader::open(&bundle[..], &keys).expect("header");
        assert_eq!(reader.manifest().version(), Version::new(1, 2, 0));
        let mut parts: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut buf = [0u8; 100];
        while let Some((index, n)) = reader.read(&mut buf).expect("read") {
            parts[index].extend_from_slice(&buf[..n]);
        }
        assert_eq!(parts, [root, uki]);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (bundle, _, _) = sample();
        let keys = [key(1).verifying_key()];
        for at in 0..bundle.len() {
            let mut bad = bundle.clone();
            bad[at] ^= 0x01;
            assert!(verify(&bad, &keys).is_err(), "flipped byte {at} accepted");
        }
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let (bundle, _, _) = sample();
        let keys = [key(1).verifying_key()];
        for len in 0..bundle.len() {
            let error = verify(&bundle[..len], &keys).expect_err("truncated accepted");
            assert!(
                matches!(error, BundleError::Truncated(_) | BundleError::NotABundle),
                "at {len}: {error}"
            );
        }
        let mut longer = bundle.clone();
        longer.push(0);
        assert!(matches!(
            verify(&longer, &keys),
            Err(BundleError::TrailingData)
        ));
    }

    #[test]
    fn wrong_key_unsigned_and_no_keys_are_refused_with_their_reason() {
        let (bundle, _, _) = sample();
        assert!(matches!(
            verify(&bundle, &[key(2).verifying_key()]),
            Err(BundleError::BadSignature)
        ));
        assert!(matches!(verify(&bundle, &[]), Err(BundleError::NoKeys)));
        let total = header_len(&bundle).expect("header").expect("length");
        let mut unsigned = bundle.clone();
        unsigned[total - SIGNATURE_LEN..total].fill(0);
        assert!(matches!(
            verify(&unsigned, &[key(1).verifying_key()]),
            Err(BundleError::Unsigned)
        ));
        assert!(matches!(
            verify(b"PK\x03\x04 a zip file", &[key(1).verifying_key()]),
            Err(BundleError::NotABundle)
        ));
    }

    #[test]
    fn a_signed_bundle_for_another_product_is_refused() {
        let (root, uki) = (b"root".to_vec(), b"uki".to_vec());
        let mut manifest = manifest_for(&root, &uki);
        manifest.product = "otherbox".into();
        let bundle = bundle_with(&manifest, &key(1), &root, &uki);
        let error = verify(&bundle, &[key(1).verifying_key()]).expect_err("refused");
        assert!(matches!(error, BundleError::WrongProduct { .. }), "{error}");
        assert!(error.to_string().contains("otherbox"), "{error}");
    }

    #[test]
    fn a_signed_manifest_that_lies_about_a_payload_is_refused() {
        let (root, uki) = (b"root image".to_vec(), b"uki".to_vec());
        let manifest = manifest_for(&root, &uki);
        let mut other = root.clone();
        other[0] = b'R';
        let bundle = bundle_with(&manifest, &key(1), &other, &uki);
        assert!(matches!(
            verify(&bundle, &[key(1).verifying_key()]),
            Err(BundleError::HashMismatch { name }) if name == ROOT
        ));
    }

    #[test]
    fn manifests_must_name_exactly_root_and_uki_with_sane_sizes() {
        let good = manifest_for(b"r", b"u");
        let mut missing = good.clone();
        missing.components.pop();
        assert!(missing.validate().is_err());
        let mut swapped = good.clone();
        swapped.components.reverse();
        assert!(swapped.validate().is_err());
        let mut huge = good.clone();
        huge.components[0].size = MAX_ROOT_SIZE + 1;
        assert!(huge.validate().is_err());
        let mut upper = good.clone();
        upper.components[0].sha256 = upper.components[0].sha256.to_uppercase();
        assert!(upper.validate().is_err());
        let mut version = good;
        version.version = "1.2".into();
        assert!(version.validate().is_err());
    }

    #[test]
    fn versions_must_move_forward_from_at_least_the_minimum() {
        let manifest = manifest_for(b"r", b"u"); // 1.2.0, from 1.0.0
        assert!(manifest.check_upgrade(&Version::new(1, 0, 0)).is_ok());
        assert!(manifest.check_upgrade(&Version::new(1, 1, 5)).is_ok());
        assert!(matches!(
            manifest.check_upgrade(&Version::new(0, 9, 0)),
            Err(BundleError::TooOld { .. })
        ));
        assert!(matches!(
            manifest.check_upgrade(&Version::new(1, 2, 0)),
            Err(BundleError::NotNewer { .. })
        ));
        assert!(matches!(
            manifest.check_upgrade(&Version::new(2, 0, 0)),
            Err(BundleError::NotNewer { .. })
        ));
        let pre = Version::parse("1.2.0-rc.1").expect("version");
        assert!(
            manifest.check_upgrade(&pre).is_ok(),
            "a release follows its rc"
        );
    }

    proptest::proptest! {
        /// Whatever a trusted key signs, reading it never panics, and
        /// anything accepted is a valid manifest whose payloads matched.
        #[test]
        fn signed_garbage_is_refused_or_valid_never_a_panic(
            manifest in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            json in proptest::prelude::any::<bool>(),
        ) {
            let manifest = if json {
                // Near-valid JSON reaches the validation, not only the parser.
                let sizes: Vec<u64> = manifest.iter().take(2).map(|b| u64::from(*b)).collect();
                serde_json::to_vec(&serde_json::json!({
                    "product": PRODUCT, "version": "1.0.0", "min_from_version": "0.1.0",
                    "components": [
                        {"name": ROOT, "sha256": "0".repeat(64), "size": sizes.first().copied().unwrap_or(0)},
                        {"name": UKI, "sha256": "0".repeat(64), "size": sizes.get(1).copied().unwrap_or(0)},
                    ],
                })).expect("json")
            } else {
                manifest
            };
            let key = key(1);
            let signature = key.sign(&[SIGNING_CONTEXT, &manifest].concat());
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&u32::try_from(manifest.len()).expect("small").to_be_bytes());
            bytes.extend_from_slice(&manifest);
            bytes.extend_from_slice(&signature.to_bytes());
            bytes.extend_from_slice(&payload);
            if let Ok(accepted) = verify(&bytes, &[key.verifying_key()]) {
                proptest::prop_assert!(accepted.validate().is_ok());
            }
        }
    }

    #[test]
    fn the_header_can_be_checked_as_soon_as_it_arrives() {
        let (bundle, _, _) = sample();
        assert_eq!(header_len(&bundle[..3]).expect("prefix"), None);
        assert!(matches!(header_len(b"PGX"), Err(BundleError::NotABundle)));
        let total = header_len(&bundle[..10]).expect("ok").expect("known");
        let manifest = parse_header(&bundle[..total], &[key(1).verifying_key()]).expect("header");
        let rest = Reader::after_header(&bundle[total..], manifest);
        assert!(rest.verify_to_end().is_ok());
        let mut big = bundle.clone();
        big[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            header_len(&big),
            Err(BundleError::ManifestSize(_))
        ));
    }
}
