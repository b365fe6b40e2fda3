//! The liveness keepalived tracks. While VRRP is configured, poolgate
//! rewrites one small file every [`WRITE_EVERY`] with the time on the
//! boot clock (`CLOCK_BOOTTIME`, immune to NTP steps and counting through
//! suspend), but only while the tasks that serve are alive (the control
//! task, the listeners, the proxy). keepalived runs `poolgate vrrp-check
//! FILE` every second ([`check`]): the file is fresh if it was written less
//! than [`MAX_AGE`] ago. A killed poolgate stops writing; so does a hung
//! one (a stuck runtime never reaches the next write), and a task that
//! ended makes the writer remove the file: in each case the check fails
//! and keepalived gives up the addresses.
//!
//! Why a script and not keepalived's `track_file`: `track_file` reacts to
//! what is written into the file, so a process that hangs (or dies without
//! writing) leaves the last "healthy" value in place forever. Only a check
//! of the file's age sees a process that stopped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// How often the health file is rewritten.
pub(crate) const WRITE_EVERY: Duration = Duration::from_millis(250);
/// How old the file may be before the check fails: six missed writes, so a
/// busy machine does not fail over; with a 1 s check, a stopped poolgate
/// is seen within 1.5–2.5 s.
pub const MAX_AGE: Duration = Duration::from_millis(1500);
/// Longer content is not ours.
const MAX_LEN: u64 = 64;

/// Milliseconds on the boot clock.
fn boot_ms() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let ms = now.tv_sec().checked_mul(1000)? + now.tv_nsec() / 1_000_000;
    u64::try_from(ms).ok()
}

/// What `poolgate vrrp-check` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Serving,
    /// Why not: missing, unreadable, stale.
    NotServing(String),
}

/// Judge the health file at `path` now.
pub fn check(path: &Path) -> Verdict {
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|file| file.take(MAX_LEN).read_to_string(&mut text));
    if let Err(error) = read {
        return Verdict::NotServing(format!("{}: {error}", path.display()));
    }
    let Ok(written) = text.trim().parse::<u64>() else {
        return Verdict::NotServing(format!("{}: not a time", path.display()));
    };
    let Some(now) = boot_ms() else {
        return Verdict::NotServing("the boot clock cannot be read".to_owned());
    };
    let age = now.saturating_sub(written);
    if age > MAX_AGE.as_millis() as u64 {
        Verdict::NotServing(format!("last written {age} ms ago"))
    } else {
        Verdict::Serving
    }
}

/// The tasks whose end means poolgate no longer serves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Liveness {
    tasks: Vec<(&'static str, AbortHandle)>,
}

impl Liveness {
    pub(crate) fn watch(&mut self, name: &'static str, task: AbortHandle) {
        self.tasks.push((name, task));
    }

    /// The first task that ended, if any.
    fn ended(&self) -> Option<&'static str> {
        self.tasks
            .iter()
            .find(|(_, task)| task.is_finished())
            .map(|(name, _)| *name)
    }
}

/// Write the health file into place (a rename, so the check never reads
/// half a file).
fn write(path: &Path, temp: &Path, ms: u64) -> std::io::Result<()> {
    std::fs::write(temp, format!("{ms}\n"))?;
    std::fs::rename(temp, path)
}

/// A request to withhold the health file (`Vrrp::give_up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GiveUp {
    pub until: tokio::time::Instant,
    pub reason: String,
}

/// Keep `path` fresh while `liveness` holds and `enabled` says VRRP is on,
/// until `stop`; the file is removed when any of those ends, and while
/// `giving_up` names a time still to come.
pub(crate) async fn run(
    path: PathBuf,
    liveness: Liveness,
    mut enabled: tokio::sync::watch::Receiver<bool>,
    mut giving_up: tokio::sync::watch::Receiver<Option<GiveUp>>,
    stop: CancellationToken,
) {
    let temp = path.with_extension("tmp");
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<String> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
            changed = enabled.changed() => if changed.is_err() { break },
            changed = giving_up.changed() => if changed.is_err() { break },
        }
        let on = *enabled.borrow_and_update();
        let yielding = giving_up
            .borrow_and_update()
            .as_ref()
            .filter(|give_up| tokio::time::Instant::now() < give_up.until)
            .map(|give_up| give_up.reason.clone());
        if on && let Some(reason) = yielding {
            let _ = std::fs::remove_file(&path);
            let problem = format!("giving the addresses up: {reason}");
            if reported.as_ref() != Some(&problem) {
                tracing::info!(%reason, "Health file withheld: keepalived gives the addresses up");
                reported = Some(problem);
            }
            continue;
        }
        let problem = match (on, liveness.ended()) {
            (false, _) => None,
            (true, Some(task)) => Some(format!("the {task} task ended")),
            (true, None) => match boot_ms().map(|ms| write(&path, &temp, ms)) {
                Some(Ok(())) => {
                    reported = None;
                    continue;
                }
                Some(Err(error)) => Some(format!("cannot write {}: {error}", path.display())),
                None => Some("the boot clock cannot be read".to_owned()),
            },
        };
        let _ = std::fs::remove_file(&path);
        if let Some(problem) = problem
            && reported.as_ref() != Some(&problem)
        {
            tracing::error!(%problem, "Not serving: VRRP gives up the addresses");
            reported = Some(problem);
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_passes_and_a_stale_or_missing_one_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("health");
        assert!(matches!(check(&path), Verdict::NotServing(_)));
        let now = boot_ms().expect("boot clock");
        std::fs::write(&path, format!("{now}\n")).expect("write");
        assert_eq!(check(&path), Verdict::Serving);
        let old = now - MAX_AGE.as_millis() as u64 - 1000;
        std::fs::write(&path, format!("{old}\n")).expect("write");
        assert!(matches!(check(&path), Verdict::NotServing(m) if m.contains("ago")));
        std::fs::write(&path, "healthy\n").expect("write");
        assert!(matches!(check(&path), Verdict::NotServing(m) if m.contains("not a time")));
    }
}
