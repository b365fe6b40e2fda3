//! Process and appliance concerns: logging setup, the umask, termination
//! signals, systemd notification, and upgrades by image swap. The upgrade
//! modules depend one way, each only on those listed before it: `bundle`
//! (the signed bundle format), `layout` (slots and the ESP), `install` (the
//! protocol of the root-owned step that writes slot and ESP), `upgrade`
//! (check, install, receive an upload, settle after a reboot; `Upgrader` is
//! its facade), `reboot` (how and when to reboot into an upgrade).
//! Nothing here knows about pools: what a reboot waits for is counted by a
//! callback its caller provides.

pub mod bundle;
pub(crate) mod install;
pub mod layout;
pub mod network;
pub mod reboot;
pub mod upgrade;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

/// A file operation that failed: what was being done, on which path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct FileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// `map_err(FileError::on("cannot open", &path))`, into any error that
    /// has a `From<FileError>`.
    pub(crate) fn on<E: From<Self>>(
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> E + use<E> {
        let path = path.to_owned();
        move |source| E::from(Self { what, path, source })
    }
}

/// Files and directories this process creates are its owner's alone
/// (umask 0077), whatever the caller's umask: the data directory holds
/// password hashes, keys and database backups. Files meant for others get
/// their mode set explicitly.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Structured logs to stderr (journald under systemd). `RUST_LOG` overrides
/// the default `info` level.
pub fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rustls warns once per handshake whose server name is an IP address or
    // malformed: anyone could flood the log with it. The accept layer counts
    // and logs those at debug instead; an explicit `RUST_LOG` for rustls
    // still gets everything.
    let rustls_named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls"));
    if !rustls_named && let Ok(quiet) = "rustls::msgs::handshake=error".parse() {
        filter = filter.add_directive(quiet);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Cancel `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = token.cancelled() => return,
        };
        tracing::info!(signal = name, "Shutting down");
        token.cancel();
    });
    Ok(())
}

/// Tell systemd (`Type=notify`) we are serving. A no-op outside systemd.
pub(crate) fn notify_ready() {
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "Cannot notify systemd of readiness");
    }
}

/// Tell systemd we are stopping. A no-op outside systemd.
pub(crate) fn notify_stopping() {
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::warn!(%error, "Cannot notify systemd of stopping");
    }
}
