//! Rebooting into an installed upgrade: now, at a time the admin picks, and
//! optionally once the proxy has no connection open (up to a deadline). The
//! database backup is taken again just before the reboot (`Upgrader::reboot`),
//! so a later rollback restores the data as it was when the old version
//! stopped.
//!
//! One reboot is scheduled at a time; a new upgrade replaces it. A due
//! reboot waits for an upgrade being written and then reboots into what is
//! pending at that moment, so it never cuts an install short.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::upgrade::{RebootMode, Upgrader};
use crate::state::PublisherHandle;
use crate::store::Store;

/// The longest an admin may ask the reboot to wait for connections to end.
pub const MAX_DRAIN: Duration = Duration::from_secs(24 * 3600);
/// How often the drain is checked.
const DRAIN_POLL: Duration = Duration::from_secs(1);
/// How long a due reboot waits for an upgrade being written to finish.
const LOCK_WAIT: Duration = Duration::from_secs(3600);

/// When to reboot into a new slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebootPlan {
    /// `None`: now.
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    /// Wait for the proxy's connections to end first, up to this long.
    pub drain_timeout_s: Option<u64>,
}

/// The appliance's upgrader, how it reboots, and the reboot waiting to happen.
#[derive(Debug)]
pub struct Upgrades {
    pub upgrader: Upgrader,
    pub mode: RebootMode,
    scheduled: Mutex<Option<(RebootPlan, tokio::task::AbortHandle)>>,
}

impl Upgrades {
    pub fn new(upgrader: Upgrader, mode: RebootMode) -> Self {
        Self {
            upgrader,
            mode,
            scheduled: Mutex::new(None),
        }
    }

    /// The image's layout, never rebooting: what a caller gets until it says
    /// otherwise.
    pub fn never_rebooting(data_dir: std::path::PathBuf) -> Self {
        Self::new(
            Upgrader::new(super::layout::Layout::default(), data_dir),
            RebootMode::Disabled,
        )
    }

    pub fn scheduled(&self) -> Option<RebootPlan> {
        self.scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(_, task)| !task.is_finished())
            .map(|(plan, _)| plan.clone())
    }

    /// Reboot into the pending upgrade as `plan` says, in the background.
    pub fn schedule(self: &Arc<Self>, plan: RebootPlan, store: Store, publisher: PublisherHandle) {
        let this = Arc::clone(self);
        let task_plan = plan.clone();
        let task = tokio::spawn(async move {
            this.reboot_when_due(task_plan, store, publisher).await;
        });
        let previous = self
            .scheduled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((plan, task.abort_handle()));
        if let Some((_, previous)) = previous {
            previous.abort();
        }
    }

    async fn reboot_when_due(&self, plan: RebootPlan, store: Store, publisher: PublisherHandle) {
        if let Some(at) = plan.at {
            let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
        }
        if let Some(timeout) = plan.drain_timeout_s {
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(timeout).min(MAX_DRAIN);
            // Bounded by the deadline.
            loop {
                let open = active_connections(&publisher);
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
            upgrader.reboot_into_pending(mode, &store, LOCK_WAIT)
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
pub fn request(path: &std::path::Path) -> Result<(), super::upgrade::UpgradeError> {
    let io = |what| {
        move |source| super::upgrade::UpgradeError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    };
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

/// Connections open through the VIP proxy, over every member.
fn active_connections(publisher: &PublisherHandle) -> u64 {
    let view = publisher.current();
    view.pools
        .iter()
        .flat_map(|pool| pool.members.iter())
        .map(|member| member.counters.active())
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::state::{self, Inputs};
    use crate::system::layout::{Layout, Slot};
    use crate::system::upgrade::{Pending, UpgradeState};

    fn reboot_events(store: &Store) -> usize {
        crate::system::upgrade::tests::upgrade_events(store)
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
        let path =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
        let config = crate::config::load(&path).expect("example");
        let shutdown = CancellationToken::new();
        let (publisher, _task) = state::spawn(
            Inputs::new(Arc::new(config), 1, BTreeMap::new()),
            shutdown.clone(),
        );
        let counters = Arc::clone(&publisher.current().pools[0].members[0].counters);
        counters.active_connections.store(2, Ordering::Relaxed);
        let upgrades = Arc::new(Upgrades::new(
            Upgrader::new(Layout::default(), dir.path().to_owned()),
            RebootMode::Disabled,
        ));
        let at = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let plan = RebootPlan {
            at: Some(at),
            drain_timeout_s: Some(600),
        };
        upgrades.schedule(plan.clone(), store.clone(), publisher.clone());
        assert_eq!(upgrades.scheduled(), Some(plan));

        tokio::time::sleep(Duration::from_secs(3590)).await;
        settle().await;
        assert_eq!(reboot_events(&store), 0, "not before its time");
        tokio::time::sleep(Duration::from_secs(300)).await;
        settle().await;
        assert_eq!(reboot_events(&store), 0, "not while connections are open");
        counters.active_connections.store(0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(reboot_events(&store), 1, "once they ended");
        assert!(upgrades.scheduled().is_none());
        assert!(dir.path().join("upgrade/pre-upgrade.db").is_file());
        shutdown.cancel();
    }
}
