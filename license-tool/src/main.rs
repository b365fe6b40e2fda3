//! `poolgate-license`: the vendor's tool. Creates the Ed25519 key pair that
//! signs licences and issues licences bound to one appliance id. The private
//! key stays with the vendor; the public key is compiled into release builds
//! through `POOLGATE_LICENSE_KEYS`. See README.md beside this file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use poolgate::license::document::{self, Licence, Limits};
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(
    name = "poolgate-license",
    about = "Create licence keys and issue poolgate licences"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a signing key pair: DIR/license-signing.key (secret) and DIR/license-signing.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a licence and print it.
    Issue {
        /// The secret key file written by `keygen`.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        customer: String,
        /// The appliance id shown on the appliance's licence page.
        #[arg(long)]
        appliance_id: String,
        /// Licence id; a random one if omitted.
        #[arg(long)]
        id: Option<String>,
        /// Valid for this many days (omit both this and --expires for perpetual).
        #[arg(long, conflicts_with = "expires")]
        days: Option<i64>,
        /// Expiry as an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        virtual_services: Option<u32>,
        #[arg(long)]
        members: Option<u32>,
        #[arg(long = "feature")]
        features: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => keygen(&out),
        Command::Issue {
            key,
            customer,
            appliance_id,
            id,
            days,
            expires,
            virtual_services,
            members,
            features,
        } => {
            let key = read_key(&key)?;
            let issued = OffsetDateTime::now_utc();
            let expires = match (days, expires) {
                (Some(days), _) => Some(issued + time::Duration::days(days)),
                (None, Some(at)) => Some(
                    OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                        .with_context(|| format!("--expires {at:?} is not an RFC 3339 time"))?,
                ),
                (None, None) => None,
            };
            let licence = Licence {
                id: id.unwrap_or_else(|| format!("PG-{:08X}", rand::random::<u32>())),
                customer,
                issued,
                not_before: None,
                expires,
                appliance_id,
                limits: Limits {
                    virtual_services,
                    members,
                    features,
                },
            };
            println!("{}", document::sign(&licence, &key));
            Ok(())
        }
    }
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let secret = out.join("license-signing.key");
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
    let public = document::key_hex(&key.verifying_key());
    std::fs::write(out.join("license-signing.pub"), format!("{public}\n"))?;
    println!("{public}");
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
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
