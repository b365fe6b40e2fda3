//! Receiving an upload into `<data>/upgrade/incoming.pgup`, piece by piece,
//! and what an upload comes to (checked only, or installed).
//!
//! Invariants: the header is checked as soon as it has arrived, so a bundle
//! for another product, unsigned, signed by another key, or not an upgrade
//! for this appliance is refused after a few kilobytes rather than after the
//! whole image; nothing past the declared size is written; the received file
//! is removed when the upload ends, however it ends.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Pending, Plan, UpgradeError, UpgradeLock, Upgrader, io};
use crate::store::Store;
use crate::system::bundle::{self, BundleError};

/// An upload being received into `<data>/upgrade/incoming.pgup`. Its header
/// is checked as soon as it has arrived, so a bundle for another product,
/// unsigned, signed by another key, or not an upgrade for this appliance is
/// refused after a few kilobytes rather than after the whole image. The
/// file is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct Receiving {
    file: File,
    path: PathBuf,
    header: Vec<u8>,
    expected: Option<u64>,
    received: u64,
}

impl Receiving {
    /// Append the next piece of the upload.
    pub(crate) fn push(
        &mut self,
        upgrader: &Upgrader,
        mut bytes: &[u8],
    ) -> Result<(), UpgradeError> {
        if self.expected.is_none() {
            let total = match bundle::header_len(&self.header)? {
                Some(total) => total,
                None => {
                    bundle::header_len(&[&self.header[..], bytes].concat())?.unwrap_or(usize::MAX)
                }
            };
            let take = total.saturating_sub(self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            self.write(&bytes[..take])?;
            bytes = &bytes[take..];
            if self.header.len() == total {
                let manifest = bundle::parse_header(&self.header, &upgrader.keys)?;
                upgrader.plan(&manifest)?;
                let payload: u64 = manifest.components.iter().map(|c| c.size).sum();
                self.expected = Some(total as u64 + payload);
            }
        }
        if let Some(expected) = self.expected
            && self.received + bytes.len() as u64 > expected
        {
            return Err(BundleError::TrailingData.into());
        }
        self.write(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), UpgradeError> {
        self.file
            .write_all(bytes)
            .map_err(io("cannot write", &self.path))?;
        self.received += bytes.len() as u64;
        Ok(())
    }

    /// The whole upload is here: the file to check and install from.
    pub(crate) fn finish(&mut self) -> Result<&Path, UpgradeError> {
        if self.expected != Some(self.received) {
            return Err(BundleError::Truncated("the upload ended early").into());
        }
        self.file.flush().map_err(io("cannot write", &self.path))?;
        Ok(&self.path)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Upgrader {
    /// Start receiving an upload (hold the lock first).
    pub(crate) fn receive(&self, _lock: &UpgradeLock) -> Result<Receiving, UpgradeError> {
        let path = self.incoming_path();
        let file = File::create(&path).map_err(io("cannot create", &path))?;
        Ok(Receiving {
            file,
            path,
            header: Vec::new(),
            expected: None,
            received: 0,
        })
    }
}

/// What an upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Uploaded {
    /// `verify_only`: every check passed; nothing was written.
    Verified(Plan),
    Installed(Pending),
}

impl Upgrader {
    /// Receive a bundle piece by piece, check it, and (unless `verify_only`)
    /// install it. A refusal is recorded in the event log, except for a
    /// check-only upload, which writes nothing at all.
    pub(crate) fn upload<B: AsRef<[u8]>>(
        &self,
        store: &Store,
        actor: &str,
        chunks: impl Iterator<Item = Result<B, String>>,
        verify_only: bool,
    ) -> Result<Uploaded, UpgradeError> {
        let lock = self.lock()?;
        let mut receiving = self.receive(&lock)?;
        let received = (|| {
            // Bounded: `push` refuses anything past the declared size.
            for chunk in chunks {
                receiving.push(self, chunk.map_err(UpgradeError::Upload)?.as_ref())?;
            }
            receiving.finish().map(Path::to_owned)
        })();
        let path = match received {
            Ok(path) => path,
            Err(error) => {
                if !verify_only {
                    self.record_refusal(store, actor, &error)?;
                }
                return Err(error);
            }
        };
        if verify_only {
            return self.verify_file(&path).map(Uploaded::Verified);
        }
        let plan = self.check_file(&lock, &path, store, actor)?;
        let pending = self.install_file(&path, &plan, store, actor)?;
        drop(receiving);
        Ok(Uploaded::Installed(pending))
    }
}
