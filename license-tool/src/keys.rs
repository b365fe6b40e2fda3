//! Signing key files for the vendor tools: the secret key as hex in
//! `<name>.key` (mode 0600, never overwritten) and the public key as hex in
//! `<name>.pub`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;

/// Create `out/<name>.key` and `out/<name>.pub`; returns the public key hex.
pub fn keygen(out: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(out)?;
    let secret = out.join(format!("{name}.key"));
    if secret.exists() {
        bail!(
            "{} exists; refusing to overwrite a signing key",
            secret.display()
        );
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)?;
    writeln!(file, "{hex}")?;
    let public = poolgate::license::document::key_hex(&key.verifying_key());
    std::fs::write(out.join(format!("{name}.pub")), format!("{public}\n"))?;
    Ok(public)
}

pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let hex = text.trim();
    let mut bytes = [0u8; 32];
    if hex.len() != 64 {
        bail!("{} is not a signing key written by keygen", path.display());
    }
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).with_context(|| {
            format!("{} is not a signing key written by keygen", path.display())
        })?;
    }
    Ok(SigningKey::from_bytes(&bytes))
}
