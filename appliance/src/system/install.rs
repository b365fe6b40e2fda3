//! The privileged half of an upgrade: writing the inactive root slot and the
//! ESP. poolgate runs unprivileged and cannot write either; on the image it
//! stages a bundle it verified and asks a root-owned step to install it
//! (docs/decisions/0703-least-privilege.md):
//!
//! 1. poolgate (`request`) copies the bundle to `staged.pgup` beside the
//!    layout's `install_request` file, then creates that file with a typed
//!    request (`{"id": …}`, nothing else) and waits for the result.
//! 2. `poolgate-install.path` sees the request and starts
//!    `poolgate-install.service` as root: `poolgate system install-staged`
//!    with a fixed argv (`Upgrader::install_staged`, through `serve_staged`
//!    here). It removes the request, copies
//!    the staged bundle into its own root-only work directory (so nothing
//!    poolgate still holds open can change what is checked and written),
//!    verifies it again with the keys compiled into the binary on the
//!    running root, works out the target slot itself, writes slot and UKI
//!    exactly as an in-process install does, and writes
//!    `install-result.json` (typed, 0644) beside the request.
//! 3. poolgate reads the result and goes on as before: events, database
//!    backup, pending state, reboot.
//!
//! Invariants:
//! * Nothing from the request reaches the slot, the ESP or an argv: the
//!   request only says "install what is staged", and the root step believes
//!   nothing about the staged file that it has not checked itself.
//! * The root step opens everything in poolgate's directory without
//!   following symbolic links (each path component opened `O_NOFOLLOW`
//!   from `/`), so poolgate cannot point it at another file to read or
//!   overwrite.
//! * The root step reads only regular files, and never more than it can
//!   need: each is opened non-blocking and checked with `fstat` before the
//!   first read (a FIFO or device named like the staged bundle or the
//!   request is refused, never waited on), and the staged bundle is copied
//!   up to the size of the largest bundle there can be (`MAX_STAGED`).
//! * A layout without `install_request` installs in process (development,
//!   tests, a root-run console): the same checks and writes, one process.
//! * This module is the protocol and the careful file handling only; what
//!   a bundle is and how it is written are `system::upgrade`'s, which calls
//!   in here and is never called from here.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
use serde::{Deserialize, Serialize};

use super::bundle;
use super::layout::Slot;

/// Beside the layout's `install_request`: the bundle to install.
pub(crate) const STAGED_FILE: &str = "staged.pgup";
/// Beside the layout's `install_request`: what the root step did.
pub(crate) const RESULT_FILE: &str = "install-result.json";
/// How long poolgate waits for the root step (a root image is written and
/// read back in well under this on any disk the appliance supports).
pub(crate) const RESULT_WAIT: Duration = Duration::from_secs(20 * 60);
const POLL: Duration = Duration::from_millis(200);
/// A request is a few dozen bytes; anything longer is not one.
const MAX_REQUEST: u64 = 4096;
const BUNDLE_COPY: &str = "bundle.pgup";
/// The largest bundle there can be: magic and manifest length, the largest
/// manifest and its signature, the largest root image and UKI (a bundle has
/// exactly those two components). A staged file longer than this is not a
/// bundle, and the root step copies no byte past it.
const MAX_STAGED: u64 = (bundle::MAGIC.len() + 4 + bundle::MAX_MANIFEST + bundle::SIGNATURE_LEN)
    as u64
    + bundle::MAX_ROOT_SIZE
    + bundle::MAX_UKI_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the system layout names no install_request file")]
    NotConfigured,
    #[error(transparent)]
    Io(#[from] super::FileError),
    #[error("not an install request: {0}")]
    Request(String),
    #[error(
        "the installer gave no result within {} s (is poolgate-install.path enabled?)",
        .0.as_secs()
    )]
    NoAnswer(Duration),
    /// The root step could not read the request at all, so its answer
    /// names no request: it is the answer to the one request waiting.
    #[error("the root step refused the request unread: {0}")]
    Unread(String),
}

/// What a root step that applies settings (the network, VRRP) answers:
/// the request's id, whether it applied them, and what went wrong or what
/// the system's tools said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    pub id: u64,
    pub applied: bool,
    pub message: String,
}

/// The unprivileged side of a settings step: send `body` (request `id`)
/// as `request`, and wait up to `wait` for the answer named `result_name`
/// beside it. `Ok(Ok(message))`: applied; `Ok(Err(message))`: refused.
pub(crate) fn ask_step(
    request: &Path,
    body: &[u8],
    id: u64,
    result_name: &str,
    wait: Duration,
) -> Result<Result<String, String>, InstallError> {
    let answer = ask(
        request,
        body,
        &beside(request, result_name),
        wait,
        |bytes| {
            serde_json::from_slice::<StepResult>(bytes)
                .ok()
                .filter(|answer| answer.id == id)
        },
    )?;
    Ok(if answer.applied {
        Ok(answer.message)
    } else {
        Err(answer.message)
    })
}

/// The root side of a settings step: take the request at `request_path`
/// (at most `limit` bytes), read it as `R` (`what` names it in a refusal),
/// `apply` it and answer as `result_name`. `Ok(None)`: no request; a
/// request that is not an `R` is answered [`Unread`] and is the error.
pub(crate) fn serve_step<R: serde::de::DeserializeOwned>(
    request_path: &Path,
    limit: u64,
    result_name: &str,
    what: &str,
    id: impl FnOnce(&R) -> u64,
    apply: impl FnOnce(&R) -> Result<String, String>,
) -> Result<Option<StepResult>, InstallError> {
    let Some(taken) = take(request_path, limit, result_name)? else {
        return Ok(None);
    };
    let request: R = match serde_json::from_slice(&taken.bytes) {
        Ok(request) => request,
        Err(error) => {
            let reason = format!("not a {what} request: {error}");
            refuse_unread(&taken.dir, &taken.dir_path, result_name, &reason);
            return Err(InstallError::Unread(reason));
        }
    };
    let id = id(&request);
    let result = match apply(&request) {
        Ok(message) => StepResult {
            id,
            applied: true,
            message,
        },
        Err(message) => StepResult {
            id,
            applied: false,
            message,
        },
    };
    write_result(&taken.dir, &taken.dir_path, result_name, &result)?;
    Ok(Some(result))
}

/// The root step's answer to a request it could not read (not a regular
/// file, too long, not the request's form): written where the result goes,
/// so the request's sender learns at once instead of waiting out its bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Unread {
    pub unread: String,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + use<> {
    super::FileError::on(what, path)
}

/// What poolgate asks for: only an id, to tell this request's result from
/// an earlier one's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallRequest {
    pub id: String,
}

impl InstallRequest {
    fn new() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self {
            id: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Self, InstallError> {
        let request: Self =
            serde_json::from_slice(bytes).map_err(|e| InstallError::Request(e.to_string()))?;
        let valid = (1..=64).contains(&request.id.len())
            && request.id.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(InstallError::Request("the id is not hex".into()));
        }
        Ok(request)
    }
}

/// What the root step did with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallResult {
    pub id: String,
    pub outcome: InstallOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InstallOutcome {
    /// Written and read back: `version` boots from `slot` at the next reboot.
    Installed { version: String, slot: Slot },
    /// The bundle failed a check; nothing was written.
    Refused { reason: String },
    /// Checked, but writing failed; the running slot stays.
    Failed { reason: String },
}

fn beside(request: &Path, name: &str) -> PathBuf {
    request.with_file_name(name)
}

/// The unprivileged side: stage `bundle`, ask for it to be installed, and
/// wait (up to `wait`) for the answer. The staged copy and the result are
/// removed afterwards.
pub(crate) fn request(
    request: &Path,
    bundle: &Path,
    wait: Duration,
) -> Result<InstallOutcome, InstallError> {
    let dir = request.parent().ok_or(InstallError::NotConfigured)?;
    let (staged, result) = (beside(request, STAGED_FILE), beside(request, RESULT_FILE));
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    remove_if_there(&result)?;
    std::fs::copy(bundle, &staged).map_err(io("cannot stage the bundle as", &staged))?;
    File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", &staged))?;
    let asked = InstallRequest::new();
    let body = serde_json::to_vec(&asked).expect("a request serialises");
    tracing::info!(request = %request.display(), id = %asked.id, "Asked the installer to write the staged bundle");
    let answer = ask(request, &body, &result, wait, |bytes| {
        serde_json::from_slice::<InstallResult>(bytes)
            .ok()
            .filter(|answer| answer.id == asked.id)
            .map(|answer| answer.outcome)
    });
    let _ = std::fs::remove_file(&staged);
    answer
}

/// The unprivileged side of a request file: create `request` whole with
/// `body` (the rename is what the path unit sees), then wait up to `wait`
/// for a `result` file that `answer` accepts as this request's. The result
/// is removed afterwards; a request that got no answer is withdrawn, so a
/// late start of the root step finds nothing to do.
pub(crate) fn ask<T>(
    request: &Path,
    body: &[u8],
    result: &Path,
    wait: Duration,
    answer: impl Fn(&[u8]) -> Option<T>,
) -> Result<T, InstallError> {
    let dir = request.parent().ok_or(InstallError::NotConfigured)?;
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    remove_if_there(result)?;
    let mut part = request.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    std::fs::write(&part, body).map_err(io("cannot write", &part))?;
    std::fs::rename(&part, request).map_err(io("cannot create", request))?;
    let started = Instant::now();
    // Bounded by `wait`.
    let answered = loop {
        if let Ok(bytes) = std::fs::read(result) {
            if let Ok(Unread { unread }) = serde_json::from_slice(&bytes) {
                break Err(InstallError::Unread(unread));
            }
            if let Some(answered) = answer(&bytes) {
                break Ok(answered);
            }
        }
        if started.elapsed() >= wait {
            break Err(InstallError::NoAnswer(wait));
        }
        std::thread::sleep(POLL);
    };
    let _ = std::fs::remove_file(result);
    if answered.is_err() {
        let _ = std::fs::remove_file(request);
    }
    answered
}

fn remove_if_there(path: &Path) -> Result<(), InstallError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io("cannot remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// The root side's protocol (`poolgate system install-staged`, through
/// `Upgrader::install_staged`): take the request at `request_path` (the
/// layout's `install_request`), copy the bundle staged beside it into
/// `work_dir` (a root-only directory), let `install` check and write the
/// copy, and write the result. `Ok(None)`: no request.
pub(crate) fn serve_staged(
    request_path: &Path,
    work_dir: &Path,
    install: impl FnOnce(&Path) -> InstallOutcome,
) -> Result<Option<InstallResult>, InstallError> {
    let Some(Taken {
        dir,
        dir_path,
        bytes,
    }) = take(request_path, MAX_REQUEST, RESULT_FILE)?
    else {
        return Ok(None);
    };
    let dir_path = dir_path.as_path();
    let request = match InstallRequest::parse(&bytes) {
        Ok(request) => request,
        Err(error) => {
            refuse_unread(&dir, dir_path, RESULT_FILE, &error);
            return Err(error);
        }
    };
    let outcome = install_copy(&dir, dir_path, work_dir, install);
    match &outcome {
        InstallOutcome::Installed { version, slot } => {
            tracing::info!(id = %request.id, %version, slot = slot.partlabel(), "Installed the staged bundle");
        }
        InstallOutcome::Refused { reason } | InstallOutcome::Failed { reason } => {
            tracing::warn!(id = %request.id, %reason, "Did not install the staged bundle");
        }
    }
    let result = InstallResult {
        id: request.id,
        outcome,
    };
    write_result(&dir, dir_path, RESULT_FILE, &result)?;
    Ok(Some(result))
}

/// A request a root step took: the directory it was in (opened without
/// following links) and its bytes. The request file itself is gone.
pub(crate) struct Taken {
    pub dir: OwnedFd,
    pub dir_path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Answer a request that could not be read with [`Unread`] as the result
/// `result_name`, best effort (the refusal is also the step's error).
pub(crate) fn refuse_unread(
    dir: &OwnedFd,
    dir_path: &Path,
    result_name: &str,
    reason: &impl std::fmt::Display,
) {
    let unread = Unread {
        unread: reason.to_string(),
    };
    if let Err(error) = write_result(dir, dir_path, result_name, &unread) {
        tracing::warn!(%error, "Cannot answer the refused request");
    }
}

/// The root side of a request file: read it (a regular file, at most
/// `limit` bytes) without following links and remove it, so the path unit
/// that started the step does not start it again; one that is refused (not
/// a regular file, too long) is removed as well and answered [`Unread`]
/// as `result_name`. `Ok(None)`: no request.
pub(crate) fn take(
    request_path: &Path,
    limit: u64,
    result_name: &str,
) -> Result<Option<Taken>, InstallError> {
    let (dir_path, request_name) = split(request_path)?;
    let dir = open_dir_nofollow(dir_path)?;
    let read = match open_regular_in(&dir, dir_path, &request_name) {
        Ok(file) => read_limited(file, limit, request_path),
        Err(InstallError::Io(error)) if error.source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(error @ InstallError::Request(_)) => Err(error),
        Err(error) => return Err(error),
    };
    unlinkat(&dir, request_name.as_str(), UnlinkatFlags::NoRemoveDir)
        .map_err(|e| io("cannot remove", request_path)(e.into()))?;
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(error) => {
            refuse_unread(&dir, dir_path, result_name, &error);
            return Err(error);
        }
    };
    Ok(Some(Taken {
        dir,
        dir_path: dir_path.to_owned(),
        bytes,
    }))
}

/// Copy the staged bundle into `work_dir`, and have `install` check and
/// write the copy.
fn install_copy(
    dir: &OwnedFd,
    dir_path: &Path,
    work_dir: &Path,
    install: impl FnOnce(&Path) -> InstallOutcome,
) -> InstallOutcome {
    let copy = work_dir.join(BUNDLE_COPY);
    let copied = (|| {
        let staged_path = dir_path.join(STAGED_FILE);
        let staged = open_regular_in(dir, dir_path, STAGED_FILE)?;
        let len = staged
            .metadata()
            .map_err(io("cannot stat", &staged_path))?
            .len();
        if len > MAX_STAGED {
            return Err(too_long(MAX_STAGED));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&copy)
            .map_err(io("cannot create", &copy))?;
        copy_limited(staged, &mut out, MAX_STAGED).map_err(|error| match error {
            Copy::TooLong => too_long(MAX_STAGED),
            Copy::Io(error) => io("cannot copy to", &copy)(error),
        })?;
        out.sync_all().map_err(io("cannot sync", &copy))
    })();
    let outcome = match copied {
        Err(error) => InstallOutcome::Failed {
            reason: error.to_string(),
        },
        Ok(()) => install(&copy),
    };
    let _ = std::fs::remove_file(&copy);
    outcome
}

/// Write the result readable by poolgate (0644: it says nothing secret),
/// whole, by a rename within the directory opened without following links.
pub(crate) fn write_result(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    result: &impl Serialize,
) -> Result<(), InstallError> {
    let part = &format!("{name}.part");
    let _ = unlinkat(dir, part.as_str(), UnlinkatFlags::NoRemoveDir);
    let mut file = open_in(
        dir,
        dir_path,
        part,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        Mode::from_bits_truncate(0o644),
    )?;
    let path = dir_path.join(part);
    // Explicitly: the process umask (0077) would leave it root's alone.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io("cannot set the mode of", &path))?;
    file.write_all(&serde_json::to_vec(result).expect("a result serialises"))
        .and_then(|()| file.sync_all())
        .map_err(io("cannot write", &path))?;
    renameat(dir, part.as_str(), dir, name).map_err(|e| io("cannot rename", &path)(e.into()))
}

fn split(path: &Path) -> Result<(&Path, String), InstallError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| InstallError::Request(format!("{} names no file", path.display())))?;
    let dir = path
        .parent()
        .ok_or_else(|| InstallError::Request(format!("{} has no directory", path.display())))?;
    Ok((dir, name.to_owned()))
}

/// Open the directory `path` (absolute, or relative to the current one)
/// one component at a time, refusing symbolic links anywhere on the way.
fn open_dir_nofollow(path: &Path) -> Result<OwnedFd, InstallError> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let error = |e: nix::errno::Errno| io("cannot open (without following links)", path)(e.into());
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = nix::fcntl::open(start, flags, Mode::empty()).map_err(error)?;
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                dir = openat(&dir, name, flags, Mode::empty()).map_err(error)?;
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(InstallError::Request(format!(
                    "{} must not contain ..",
                    path.display()
                )));
            }
        }
    }
    Ok(dir)
}

/// Open `name` in `dir` without following a link.
fn open_in(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    flags: OFlag,
    mode: Mode,
) -> Result<File, InstallError> {
    let fd = openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
    .map_err(|e| io("cannot open", &dir_path.join(name))(e.into()))?;
    Ok(File::from(fd))
}

/// Open `name` in `dir` for reading without following a link, if it is a
/// regular file. It is opened non-blocking and checked before anything is
/// read, so a FIFO (or a device) in its place is refused rather than waited
/// on; a regular file never blocks, and is handed out blocking again.
fn open_regular_in(dir: &OwnedFd, dir_path: &Path, name: &str) -> Result<File, InstallError> {
    let path = dir_path.join(name);
    let file = open_in(
        dir,
        dir_path,
        name,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        Mode::empty(),
    )?;
    if !file.metadata().map_err(io("cannot stat", &path))?.is_file() {
        return Err(InstallError::Request(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    fcntl(&file, FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .and_then(|flags| fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)))
        .map_err(|e| io("cannot set the flags of", &path)(e.into()))?;
    Ok(file)
}

fn too_long(limit: u64) -> InstallError {
    InstallError::Request(format!(
        "the staged bundle is longer than any bundle ({limit} bytes)"
    ))
}

#[derive(Debug)]
enum Copy {
    TooLong,
    Io(std::io::Error),
}

/// Copy all of `from` to `to`, refusing (after `limit` bytes) anything
/// longer than `limit`.
fn copy_limited(from: impl Read, to: &mut impl Write, limit: u64) -> Result<u64, Copy> {
    let copied = std::io::copy(&mut from.take(limit + 1), to).map_err(Copy::Io)?;
    if copied > limit {
        return Err(Copy::TooLong);
    }
    Ok(copied)
}

fn read_limited(file: File, limit: u64, path: &Path) -> Result<Vec<u8>, InstallError> {
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read", path))?;
    if bytes.len() as u64 > limit {
        return Err(InstallError::Request(format!("longer than {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Run `f` on a thread, waiting at most a generous bound; if it is
    /// still blocked on the FIFO at `fifo` by then, open the FIFO's other
    /// end to release it (so no thread is left behind) and fail.
    fn unblocked<T: Send + 'static>(fifo: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(value) => {
                thread.join().expect("joined");
                value
            }
            Err(_) => {
                let _ = std::fs::OpenOptions::new().write(true).open(fifo);
                let _ = thread.join();
                panic!("blocked on the FIFO {}", fifo.display());
            }
        }
    }

    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }

    #[test]
    fn a_fifo_in_place_of_the_request_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = dir.path().join("install-request");
        fifo(&request);
        let taken = {
            let request = request.clone();
            unblocked(&dir.path().join("install-request"), move || {
                take(&request, MAX_REQUEST, RESULT_FILE).map(|taken| taken.is_some())
            })
        };
        assert!(
            matches!(&taken, Err(InstallError::Request(reason)) if reason.contains("not a regular file")),
            "{taken:?}"
        );
        assert!(
            std::fs::symlink_metadata(&request).is_err(),
            "the refused request is removed, so the path unit does not start again"
        );
        let answer: Unread = serde_json::from_slice(
            &std::fs::read(dir.path().join(RESULT_FILE)).expect("the refusal is answered"),
        )
        .expect("an unread answer");
        assert!(answer.unread.contains("not a regular file"), "{answer:?}");

        // A regular request is still taken.
        std::fs::write(&request, br#"{"id":"00ff"}"#).expect("request");
        let taken = take(&request, MAX_REQUEST, RESULT_FILE)
            .expect("taken")
            .expect("a request");
        assert_eq!(taken.bytes, br#"{"id":"00ff"}"#);
        assert!(!request.exists());
    }

    #[test]
    fn a_request_refused_unread_is_answered_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = dir.path().join("install-request");
        let result = dir.path().join(RESULT_FILE);
        // The root side: finds a request it cannot read (too long) and
        // refuses it.
        let root = {
            let request = request.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                while !request.exists() {
                    assert!(started.elapsed() < Duration::from_secs(10), "no request");
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::fs::write(&request, vec![b' '; MAX_REQUEST as usize + 1]).expect("grow");
                take(&request, MAX_REQUEST, RESULT_FILE).map(|taken| taken.is_some())
            })
        };
        // Unread, not `NoAnswer`: the sender did not wait out its bound.
        let asked = ask(
            &request,
            br#"{"id":"00ff"}"#,
            &result,
            Duration::from_secs(600),
            |_| Some(()),
        );
        assert!(
            matches!(&asked, Err(InstallError::Unread(reason)) if reason.contains("bytes")),
            "{asked:?}"
        );
        assert!(root.join().expect("root side").is_err());
    }

    #[test]
    fn a_fifo_in_place_of_the_staged_bundle_is_refused_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("work dir");
        let request = dir.path().join("install-request");
        let staged = dir.path().join(STAGED_FILE);
        fifo(&staged);
        std::fs::write(&request, br#"{"id":"00ff"}"#).expect("request");
        let served = {
            let (request, work) = (request.clone(), work.path().to_owned());
            unblocked(&staged, move || {
                serve_staged(&request, &work, |_| panic!("nothing is installed"))
                    .map(|served| served.map(|result| result.outcome))
            })
        };
        let Ok(Some(InstallOutcome::Failed { reason })) = served else {
            panic!("{served:?}");
        };
        assert!(reason.contains("not a regular file"), "{reason}");
        assert!(dir.path().join(RESULT_FILE).is_file(), "answered");
        assert!(!work.path().join(BUNDLE_COPY).exists());
    }

    #[test]
    fn a_staged_file_longer_than_any_bundle_is_not_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("work dir");
        let request = dir.path().join("install-request");
        // Sparse: it takes no space.
        File::create(dir.path().join(STAGED_FILE))
            .and_then(|file| file.set_len(MAX_STAGED + 1))
            .expect("staged");
        std::fs::write(&request, br#"{"id":"00ff"}"#).expect("request");
        let served = serve_staged(&request, work.path(), |_| panic!("nothing is installed"))
            .expect("served")
            .expect("a result");
        let InstallOutcome::Failed { reason } = served.outcome else {
            panic!("{served:?}");
        };
        assert!(reason.contains("longer than any bundle"), "{reason}");
        assert!(!work.path().join(BUNDLE_COPY).exists());
    }

    #[test]
    fn the_copy_stops_past_its_limit() {
        let mut out = Vec::new();
        assert_eq!(
            copy_limited(&[7u8; 10][..], &mut out, 10).expect("fits"),
            10
        );
        assert_eq!(out, [7; 10]);
        let mut out = Vec::new();
        assert!(matches!(
            copy_limited(&[7u8; 11][..], &mut out, 10),
            Err(Copy::TooLong)
        ));
        assert_eq!(out.len(), 11, "no more than one byte past the limit");
        // A reader without end is cut short too.
        let mut out = Vec::new();
        assert!(matches!(
            copy_limited(std::io::repeat(1), &mut out, 4096),
            Err(Copy::TooLong)
        ));
        assert_eq!(out.len(), 4097);
    }
}
