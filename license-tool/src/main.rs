//! `poolgate-license`: the vendor's tool. Creates the Ed25519 key pair that
//! signs licences and issues licences bound to one appliance id. The private
//! key stays with the vendor; the public key is compiled into release builds
//! through `POOLGATE_LICENSE_KEYS`. See README.md beside this file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use poolgate::license::document::{self, Licence, Limits};
use time::OffsetDateTime;

mod keys;

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
    println!("{}", keys::keygen(out, "license-signing")?);
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    keys::read_key(path)
}
