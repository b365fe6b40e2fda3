//! `poolgate-bundle`: the vendor's tool for upgrade bundles. Creates the
//! Ed25519 key pair that signs them, and signs a root image and a unified
//! kernel image into `poolgate-<version>.pgup` (the format is in the
//! appliance's `system::bundle`). `make image` runs `sign` with a key
//! supplied from outside the repository; release builds trust its public
//! key through `POOLGATE_UPGRADE_KEYS`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use poolgate::license::document;
use poolgate::system::bundle::{self, Manifest, PRODUCT, Reader};

#[path = "../keys.rs"]
mod keys;

#[derive(Debug, Parser)]
#[command(
    name = "poolgate-bundle",
    about = "Create upgrade signing keys and sign poolgate upgrade bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a signing key pair: DIR/upgrade-signing.key (secret) and DIR/upgrade-signing.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a root image and a kernel image into a bundle.
    Sign {
        /// The secret key file written by `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The version the bundle installs (semver, e.g. 1.2.0).
        #[arg(long)]
        version: String,
        /// The oldest running version it may upgrade.
        #[arg(long)]
        min_from: String,
        /// The root file system image (squashfs).
        #[arg(long)]
        root: PathBuf,
        /// The unified kernel image (.efi).
        #[arg(long)]
        uki: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Check a bundle against a public key and print its manifest.
    Verify {
        file: PathBuf,
        /// A public key file written by `keygen` (one hex key per line).
        #[arg(long = "pub")]
        public: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => {
            println!("{}", keys::keygen(&out, "upgrade-signing")?);
            Ok(())
        }
        Command::Sign {
            key,
            version,
            min_from,
            root,
            uki,
            out,
        } => sign(&key, version, min_from, &root, &uki, &out),
        Command::Verify { file, public } => verify(&file, &public),
    }
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    Ok(BufReader::new(File::open(path).with_context(|| {
        format!("cannot read {}", path.display())
    })?))
}

fn sign(
    key: &Path,
    version: String,
    min_from_version: String,
    root: &Path,
    uki: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let key = keys::read_key(key)?;
    let manifest = Manifest {
        product: PRODUCT.to_owned(),
        version,
        min_from_version,
        components: vec![
            bundle::describe(bundle::ROOT, open(root)?)?,
            bundle::describe(bundle::UKI, open(uki)?)?,
        ],
    };
    if let Err(error) = manifest.validate() {
        bail!("{error}");
    }
    if manifest.version() < semver::Version::parse(&manifest.min_from_version)? {
        bail!("--min-from is newer than --version");
    }
    let part = out.with_extension("pgup.part");
    let file = File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let mut writer = BufWriter::new(file);
    bundle::write_bundle(
        &mut writer,
        &manifest,
        &key,
        &mut [&mut open(root)?, &mut open(uki)?],
    )?;
    writer
        .into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()?;
    std::fs::rename(&part, out)?;
    // Check what was written, as an appliance will.
    Reader::open(open(out)?, &[key.verifying_key()])?.verify_to_end()?;
    println!(
        "{}: {PRODUCT} {} (from {} or later), signed by {}",
        out.display(),
        manifest.version,
        manifest.min_from_version,
        document::key_hex(&key.verifying_key())
    );
    Ok(())
}

fn verify(file: &Path, public: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(public)
        .with_context(|| format!("cannot read {}", public.display()))?;
    let keys: Vec<_> = text.lines().filter_map(document::parse_key).collect();
    let manifest = Reader::open(open(file)?, &keys)
        .and_then(Reader::verify_to_end)
        .with_context(|| format!("{}: refused", file.display()))?;
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}
