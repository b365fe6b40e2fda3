//! The support bundle (`GET /api/v1/system/support-bundle`): one tar.gz of
//! what a vendor's support asks for first, with every secret removed.
//!
//! Files: `manifest.json` (when, which appliance, what was removed),
//! `system.json` (versions, build, root slot, upgrade history), `status.json`
//! (pools, members, health, drain, virtual services), `config.toml` (the
//! desired config with admin states), `events.json` (the newest
//! [`EVENTS`] events), `licence.json` (the licence status, not the licence
//! text), `network.json` (the network and VRRP settings as stored).
//!
//! What counts as a secret ([`is_secret`]): any value under a key whose name
//! contains one of [`SECRET_WORDS`] (passwords, passphrases, secrets, tokens,
//! keys such as TSIG keys and private keys, VRRP/SNMP authentication,
//! communities), wherever it is nested. Never in the bundle at all: the
//! store's password and token hashes, sessions, the certificate's private
//! key, licence texts and CA bundles (only their names, through the status).
//!
//! Invariant: every JSON or TOML document goes through [`redact`] before it
//! is written into the bundle; the bundle is built in memory and bounded by
//! what goes in (events are capped).

use std::io::Write;

/// Events in the bundle, newest first.
pub(crate) const EVENTS: usize = 2_000;

/// Key-name fragments whose values are secrets.
pub(crate) const SECRET_WORDS: &[&str] = &[
    "password",
    "passphrase",
    "secret",
    "token",
    "key",
    "tsig",
    "psk",
    "auth",
    "community",
    "private",
    "credential",
];

/// What replaces a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// Whether a key names a secret.
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// Replace every value under a secret-named key, at any depth; returns the
/// dotted paths removed.
pub(crate) fn redact(value: &mut serde_json::Value, at: &str, removed: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                if is_secret(key) && !inner.is_null() {
                    *inner = serde_json::Value::String(REDACTED.to_owned());
                    removed.push(path);
                } else {
                    redact(inner, &path, removed);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (index, inner) in items.iter_mut().enumerate() {
                redact(inner, &format!("{at}[{index}]"), removed);
            }
        }
        _ => {}
    }
}

/// A TOML document with its secrets removed, as TOML again.
pub(crate) fn redact_toml(text: &str, removed: &mut Vec<String>) -> String {
    let Ok(parsed) = toml::from_str::<serde_json::Value>(text) else {
        return "# the config could not be read back for redaction\n".to_owned();
    };
    let mut value = parsed;
    redact(&mut value, "config", removed);
    toml::to_string_pretty(&value)
        .unwrap_or_else(|_| "# the redacted config could not be written\n".to_owned())
}

/// A tar.gz of `files` (name, contents), each owner-readable, stamped `mtime`.
pub(crate) fn archive(files: &[(String, Vec<u8>)], mtime: u64) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("poolgate-support/{name}"),
            contents.as_slice(),
        )?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_at_any_depth_and_named() {
        let mut value = serde_json::json!({
            "zones": [{"name": "contoso.test", "tsig_key": "c2VjcmV0", "tsig": {"algorithm": "hmac-sha256", "secret": "abc"}}],
            "vrrp": {"auth_pass": "hunter22", "priority": 100},
            "ldap": {"bind_password": "pw", "servers": ["ldaps://dc1"]},
            "snmp": {"community": "public"},
            "api_token": "pgt_123",
            "private_key_pem": "-----BEGIN PRIVATE KEY-----",
            "name": "pool01",
        });
        let mut removed = Vec::new();
        redact(&mut value, "", &mut removed);
        let text = value.to_string();
        for secret in [
            "c2VjcmV0",
            "abc",
            "hunter22",
            "\"pw\"",
            "public",
            "pgt_123",
            "BEGIN PRIVATE",
        ] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert!(text.contains("pool01") && text.contains("ldaps://dc1") && text.contains("100"));
        assert!(
            removed.contains(&"zones[0].tsig_key".to_owned()),
            "{removed:?}"
        );
        assert!(
            removed.contains(&"vrrp.auth_pass".to_owned()),
            "{removed:?}"
        );
    }

    #[test]
    fn a_redacted_toml_config_is_toml_again() {
        let mut removed = Vec::new();
        let out = redact_toml(
            "[dns]\nlisten = \"127.0.0.1:53\"\n[[zones]]\nname = \"a.test\"\ntsig_key = \"s3cr3t\"\n",
            &mut removed,
        );
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains("a.test"), "{out}");
        assert_eq!(removed, vec!["config.zones[0].tsig_key".to_owned()]);
        toml::from_str::<toml::Value>(&out).expect("still TOML");
    }

    #[test]
    fn the_bundle_is_a_tar_gz_of_the_files() {
        let files = vec![("a.json".to_owned(), b"{}".to_vec())];
        let bytes = archive(&files, 0).expect("archive");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let names: Vec<String> = tar
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["poolgate-support/a.json"]);
    }
}
