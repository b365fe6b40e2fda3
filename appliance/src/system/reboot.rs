//! Rebooting into an installed upgrade: how the appliance reboots
//! (`RebootMode`), the reboot step itself (`Upgrader::reboot`: record it,
//! refresh the backup, reboot), and the reboot waiting to happen: now, at a
//! time the admin picks, and optionally once no connection is open any more
//! (up to a deadline). The database backup is taken again just before the
//! reboot, so a later rollback restores the data as it was when the old
//! version stopped.
//!
//! Invariants:
//! * One reboot is scheduled at a time; a new upgrade replaces it. A due
//!   reboot waits for an upgrade being written and then reboots into what is
//!   pending at that moment, so it never cuts an install short.
//! * A replaced reboot never fires: each schedule has its own cancellation
//!   token, which replacing it cancels, and which the blocking wait for the
//!   lock checks on every round and once more just before rebooting (aborting
//!   the task alone cannot stop a blocking closure already running).
//! * Rebooting runs a fixed argv (`systemctl reboot`) or creates an empty
//!   request file; nothing from a request reaches a command line.
//! * This module builds on `system::upgrade` and knows nothing about pools:
//!   the connections still open come from an `OpenConnections` callback that
//!   whoever schedules the reboot provides (the web API counts the proxy's).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::layout::Layout;
use super::upgrade::{Pending, UpgradeError, UpgradeState, Upgrader, event};
use crate::store::Store;

/// The longest an admin may ask the reboot to wait for connections to end.
pub(crate) const MAX_DRAIN: Duration = Duration::from_secs(24 * 3600);
/// How often the drain is checked.
const DRAIN_POLL: Duration = Duration::from_secs(1);
/// How long a due reboot waits for an upgrade being written to finish.
const LOCK_WAIT: Duration = Duration::from_secs(3600);
/// How often a due reboot tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(500);

/// How many connections are still open, for a reboot that waits for them to
/// end.
pub(crate) type OpenConnections = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How the appliance reboots into a new slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootMode {
    /// `systemctl reboot`: an orderly shutdown (poolgate gets SIGTERM and
    /// its grace period).
    Systemd,
    /// Never reboot (development and tests): log and record it instead.
    Disabled,
}

impl RebootMode {
    /// Reboot now: through the layout's request file if it has one,
    /// otherwise with `systemctl reboot`.
    pub(crate) fn reboot(self, layout: &Layout) -> Result<(), UpgradeError> {
        match self {
            Self::Systemd if layout.reboot_request.is_some() => {
                let path = layout.reboot_request.as_deref().expect("checked above");
                request(path)
            }
            Self::Systemd => {
                let status = std::process::Command::new("systemctl")
                    .arg("reboot")
                    .status()
                    .map_err(|error| UpgradeError::Reboot(error.to_string()))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(UpgradeError::Reboot(format!("systemctl reboot: {status}")))
                }
            }
            Self::Disabled => {
                tracing::warn!("Reboot disabled; start the new slot by rebooting");
                Ok(())
            }
        }
    }
}

impl Upgrader {
    /// Reboot into whatever is pending when the lock is free (an upgrade
    /// being written is waited for, up to `wait`); nothing pending, no
    /// reboot. Once `cancelled` is, it does not reboot either: it stops
    /// waiting at the next try of the lock, and checks once more with the
    /// lock held, just before rebooting.
    pub(crate) fn reboot_into_pending(
        &self,
        mode: RebootMode,
        store: &Store,
        wait: Duration,
        cancelled: &CancellationToken,
    ) -> Result<Option<Pending>, UpgradeError> {
        let replaced = || {
            tracing::info!("The scheduled reboot was replaced; not rebooting");
            Ok(None)
        };
        let started = std::time::Instant::now();
        // Bounded by `wait`.
        let _lock = loop {
            if cancelled.is_cancelled() {
                return replaced();
            }
            match self.lock() {
                Ok(lock) => break lock,
                Err(UpgradeError::Busy) if started.elapsed() < wait => {
                    std::thread::sleep(LOCK_POLL);
                }
                Err(error) => return Err(error),
            }
        };
        let Some(pending) = UpgradeState::load(&self.data_dir)?.pending else {
            tracing::warn!("No upgrade is pending any more; not rebooting");
            return Ok(None);
        };
        // With the lock held, no upload can replace the schedule between
        // this check and the reboot.
        if cancelled.is_cancelled() {
            return replaced();
        }
        self.reboot(mode, store, &pending)?;
        Ok(Some(pending))
    }

    /// Record the reboot into the new slot, refresh the backup (so a
    /// rollback loses nothing done since the install), then reboot.
    pub fn reboot(
        &self,
        mode: RebootMode,
        store: &Store,
        pending: &Pending,
    ) -> Result<(), UpgradeError> {
        let message = match mode {
            RebootMode::Systemd => format!("Rebooting into {}", pending.to_version),
            RebootMode::Disabled => format!(
                "Reboot into {} skipped: rebooting is disabled on this appliance",
                pending.to_version
            ),
        };
        store.record_event(&event(
            message,
            serde_json::json!({"step": "reboot", "to": pending.to_version, "mode": mode}),
        ))?;
        self.backup(store)?;
        mode.reboot(&self.layout)
    }
}

/// When to reboot into a new slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RebootPlan {
    /// `None`: now.
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    /// Wait for open connections to end first, up to this long.
    pub drain_timeout_s: Option<u64>,
}

/// The appliance's upgrader, how it reboots, and the reboot waiting to happen.
#[derive(Debug)]
pub struct Upgrades {
    pub upgrader: Upgrader,
    pub(crate) mode: RebootMode,
    scheduled: Mutex<Option<Scheduled>>,
}

/// The reboot waiting to happen: its plan, its task, and the token that
/// stops it when it is replaced (also in its blocking part, which aborting
/// the task cannot reach).
#[derive(Debug)]
struct Scheduled {
    plan: RebootPlan,
    task: tokio::task::AbortHandle,
    cancel: CancellationToken,
}

impl Scheduled {
    fn cancel(&self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

impl Upgrades {
    pub(crate) fn new(upgrader: Upgrader, mode: RebootMode) -> Self {
        Self {
            upgrader,
            mode,
            scheduled: Mutex::new(None),
        }
    }

    /// The image's layout, never rebooting: what a caller gets until it says
    /// otherwise.
    pub(crate) fn never_rebooting(data_dir: std::path::PathBuf) -> Self {
        Self::new(
            Upgrader::new(Layout::default(), data_dir),
            RebootMode::Disabled,
        )
    }

    pub(crate) fn scheduled(&self) -> Option<RebootPlan> {
        self.scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|scheduled| !scheduled.task.is_finished())
            .map(|scheduled| scheduled.plan.clone())
    }

    /// Reboot into the pending upgrade as `plan` says, in the background;
    /// `open` counts the connections a drain waits for.
    pub(crate) fn schedule(
        self: &Arc<Self>,
        plan: RebootPlan,
        store: Store,
        open: OpenConnections,
    ) {
        let this = Arc::clone(self);
        let task_plan = plan.clone();
        let cancel = CancellationToken::new();
        let task_cancel = cancel.clone();
        let mut scheduled = self.scheduled.lock().unwrap_or_else(|p| p.into_inner());
        // Cancelled before the new task starts, so the two never both reboot.
        if let Some(previous) = scheduled.take() {
            previous.cancel();
        }
        let task = tokio::spawn(async move {
            this.reboot_when_due(task_plan, store, open, task_cancel)
                .await;
        });
        *scheduled = Some(Scheduled {
            plan,
            task: task.abort_handle(),
            cancel,
        });
    }

    async fn reboot_when_due(
        &self,
        plan: RebootPlan,
        store: Store,
        open_connections: OpenConnections,
        cancel: CancellationToken,
    ) {
        if let Some(at) = plan.at {
            let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
        }
        if let Some(timeout) = plan.drain_timeout_s {
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(timeout).min(MAX_DRAIN);
            // Bounded by the deadline.
            loop {
                let open = open_connections();
                if open == 0 {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        open,
                        "Drain deadline reached; rebooting with connections open"
                    );
                    break;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
        let upgrader = self.upgrader.clone();
        let mode = self.mode;
        let result = tokio::task::spawn_blocking(move || {
            upgrader.reboot_into_pending(mode, &store, LOCK_WAIT, &cancel)
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "Cannot reboot into the upgrade"),
            Err(error) => tracing::error!(%error, "Reboot task failed"),
        }
    }
}

/// Ask the system to reboot by creating `path` (a `poolgate-reboot.path`
/// unit watches it and runs `systemctl reboot` as root, after removing it).
/// The file says nothing but its own existence, so no request data reaches
/// the root side; an existing request stands.
pub(crate) fn request(path: &std::path::Path) -> Result<(), UpgradeError> {
    let io = |what| crate::system::FileError::on::<UpgradeError>(what, path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("cannot create the directory of"))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file.sync_all().map_err(io("cannot sync")),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(io("cannot request a reboot through")(error)),
    }?;
    tracing::info!(request = %path.display(), "Reboot requested");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::system::layout::Slot;
    use crate::system::upgrade::tests::{Fake, root_image, upgrade_events};

    fn reboot_events(store: &Store) -> usize {
        upgrade_events(store)
            .iter()
            .filter(|message| message.contains("Reboot into 9.0.0 skipped"))
            .count()
    }

    /// Let the blocking reboot task run (it works in real time).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_layout_with_a_request_file_reboots_by_creating_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = dir.path().join("upgrade/reboot-request");
        let layout = Layout {
            reboot_request: Some(request.clone()),
            ..Layout::default()
        };
        RebootMode::Systemd.reboot(&layout).expect("requested");
        assert_eq!(std::fs::read(&request).expect("request file"), b"");
        // Asked again before the system acted: the request stands.
        RebootMode::Systemd
            .reboot(&layout)
            .expect("requested again");
        assert!(request.is_file());
        // Disabled: nothing is requested.
        std::fs::remove_file(&request).expect("remove");
        RebootMode::Disabled.reboot(&layout).expect("disabled");
        assert!(!request.exists());
    }

    #[test]
    fn the_layout_file_names_the_request_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("layout.toml");
        std::fs::write(
            &path,
            "cmdline = \"/run/poolgate-slot\"\nreboot_request = \"/var/lib/poolgate/upgrade/reboot-request\"\n",
        )
        .expect("layout");
        let layout = Layout::load(&path).expect("loads");
        assert_eq!(layout.cmdline, std::path::Path::new("/run/poolgate-slot"));
        assert_eq!(
            layout.reboot_request.as_deref(),
            Some(std::path::Path::new(
                "/var/lib/poolgate/upgrade/reboot-request"
            ))
        );
        assert_eq!(layout.root_a, Layout::default().root_a);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reboot_waits_for_its_time_and_for_connections_to_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        UpgradeState {
            pending: Some(Pending {
                from_version: "1.0.0".into(),
                to_version: "9.0.0".into(),
                from_slot: Slot::A,
                to_slot: Slot::B,
                installed_at: crate::store::now_rfc3339(),
                backup_schema: None,
            }),
            last: None,
        }
        .save(dir.path())
        .expect("state");
        let counted = Arc::new(AtomicU64::new(2));
        let open: OpenConnections = {
            let counted = Arc::clone(&counted);
            Arc::new(move || counted.load(Ordering::Relaxed))
        };
        let upgrades = Arc::new(Upgrades::new(
            Upgrader::new(Layout::default(), dir.path().to_owned()),
            RebootMode::Disabled,
        ));
        let at = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let plan = RebootPlan {
            at: Some(at),
            drain_timeout_s: Some(600),
        };
        upgrades.schedule(plan.clone(), store.clone(), open);
        assert_eq!(upgrades.scheduled(), Some(plan));

        tokio::time::sleep(Duration::from_secs(3590)).await;
        settle().await;
        assert_eq!(reboot_events(&store), 0, "not before its time");
        tokio::time::sleep(Duration::from_secs(300)).await;
        settle().await;
        assert_eq!(reboot_events(&store), 0, "not while connections are open");
        counted.store(0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(reboot_events(&store), 1, "once they ended");
        assert!(upgrades.scheduled().is_none());
        assert!(dir.path().join("upgrade/pre-upgrade.db").is_file());
    }

    #[test]
    fn a_due_reboot_goes_into_what_is_pending_then_and_records_it() {
        let fake = Fake::new(Slot::A);
        let upgrader = fake.upgrader("1.0.0");
        let store = Store::open(&fake.data_dir).expect("store");
        let wait = Duration::from_millis(10);
        let live = CancellationToken::new();
        let none = upgrader
            .reboot_into_pending(RebootMode::Disabled, &store, wait, &live)
            .expect("nothing pending");
        assert!(none.is_none());
        let path = fake.bundle("1.1.0", &root_image(), b"kernel");
        let plan = upgrader.verify_file(&path).expect("verified");
        upgrader
            .install_file(&path, &plan, &store, "admin")
            .expect("installed");
        {
            let _busy = upgrader.lock().expect("lock");
            assert!(matches!(
                upgrader.reboot_into_pending(RebootMode::Disabled, &store, wait, &live),
                Err(UpgradeError::Busy)
            ));
        }
        let pending = upgrader
            .reboot_into_pending(RebootMode::Disabled, &store, wait, &live)
            .expect("reboot")
            .expect("pending");
        assert_eq!(pending.to_version, "1.1.0");
        let events = upgrade_events(&store);
        assert!(
            events
                .last()
                .expect("event")
                .contains("Reboot into 1.1.0 skipped"),
            "{events:?}"
        );
        // Installing again into the same slot: the earlier install is no longer
        // pending from the moment its slot is overwritten.
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes.len() - 300;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).expect("swap");
        assert!(
            upgrader
                .install_file(&path, &plan, &store, "admin")
                .is_err()
        );
        assert!(
            UpgradeState::load(&fake.data_dir)
                .expect("state")
                .pending
                .is_none()
        );
    }

    #[test]
    fn a_replaced_reboot_waiting_for_the_lock_does_not_fire_when_it_frees() {
        let fake = Fake::new(Slot::A);
        let upgrader = fake.upgrader("1.0.0");
        let store = Store::open(&fake.data_dir).expect("store");
        let path = fake.bundle("1.1.0", &root_image(), b"kernel");
        let plan = upgrader.verify_file(&path).expect("verified");
        upgrader
            .install_file(&path, &plan, &store, "admin")
            .expect("installed");
        let before = upgrade_events(&store).len();
        // An upload holds the lock; the due reboot waits for it.
        let busy = upgrader.lock().expect("lock");
        let cancel = CancellationToken::new();
        let waiting = {
            let (upgrader, store, cancel) = (upgrader.clone(), store.clone(), cancel.clone());
            std::thread::spawn(move || {
                upgrader.reboot_into_pending(
                    RebootMode::Disabled,
                    &store,
                    Duration::from_secs(60),
                    &cancel,
                )
            })
        };
        // The reboot is replaced, then the upload ends.
        cancel.cancel();
        drop(busy);
        let outcome = waiting.join().expect("joined").expect("no error");
        assert!(outcome.is_none(), "{outcome:?}");
        let events = upgrade_events(&store);
        assert_eq!(events.len(), before, "no reboot recorded: {events:?}");
        // Cancelled before it even waits: the same.
        let outcome = upgrader
            .reboot_into_pending(RebootMode::Disabled, &store, Duration::ZERO, &cancel)
            .expect("no error");
        assert!(outcome.is_none());
        assert_eq!(upgrade_events(&store).len(), before);
    }

    #[tokio::test]
    async fn scheduling_again_cancels_the_earlier_reboot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let upgrades = Arc::new(Upgrades::new(
            Upgrader::new(Layout::default(), dir.path().to_owned()),
            RebootMode::Disabled,
        ));
        let open: OpenConnections = Arc::new(|| 0);
        let later = |hours| RebootPlan {
            at: Some(OffsetDateTime::now_utc() + time::Duration::hours(hours)),
            drain_timeout_s: None,
        };
        let token = |upgrades: &Upgrades| {
            upgrades
                .scheduled
                .lock()
                .expect("lock")
                .as_ref()
                .expect("scheduled")
                .cancel
                .clone()
        };
        upgrades.schedule(later(1), store.clone(), Arc::clone(&open));
        let first = token(&upgrades);
        let second_plan = later(2);
        upgrades.schedule(second_plan.clone(), store.clone(), open);
        let second = token(&upgrades);
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
        assert_eq!(upgrades.scheduled(), Some(second_plan));
    }
}
