//! keepalived's state as it tells it: lines on its notify FIFO
//! (`INSTANCE "poolgate_v4" MASTER 100`, `GROUP "poolgate" BACKUP 100`),
//! parsed by [`parse`] and kept per instance in a watch ([`States`]) that
//! `GET /api/v1/ha/vrrp` shows. Every change of an instance's state is an
//! event (`system`) with its reason.
//!
//! poolgate makes the FIFO (keepalived, running as root, would make it
//! root's) and opens it read-write, so the open never blocks and a
//! keepalived that restarts finds a reader. Lines are bounded
//! ([`MAX_LINE`]); a line that does not parse is logged and skipped.
//! Until keepalived says something, an instance's state is unknown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::{EventKind, EventLog, NewEvent};

/// Longer lines are not keepalived's.
const MAX_LINE: usize = 512;
/// Instances and groups kept (keepalived reports ours only: three).
const MAX_NAMES: usize = 16;

/// A VRRP state as keepalived names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VrrpState {
    Master,
    Backup,
    Fault,
    Stop,
    Deleted,
}

impl VrrpState {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "MASTER" => Self::Master,
            "BACKUP" => Self::Backup,
            "FAULT" => Self::Fault,
            "STOP" => Self::Stop,
            "DELETED" => Self::Deleted,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Master => "MASTER",
            Self::Backup => "BACKUP",
            Self::Fault => "FAULT",
            Self::Stop => "STOP",
            Self::Deleted => "DELETED",
        }
    }
}

/// One line of the FIFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// `false` for a sync group.
    pub instance: bool,
    pub name: String,
    pub state: VrrpState,
    pub priority: u8,
}

/// A FIFO line, or `None` for what poolgate does not follow
/// (`MASTER_RX_LOWER_PRI`, priority changes, other kinds).
pub(crate) fn parse(line: &str) -> Option<Notice> {
    let (kind, rest) = line.trim().split_once(' ')?;
    let instance = match kind {
        "INSTANCE" => true,
        "GROUP" => false,
        _ => return None,
    };
    let rest = rest.strip_prefix('"')?;
    let (name, rest) = rest.split_once('"')?;
    let mut words = rest.split_whitespace();
    let state = VrrpState::parse(words.next()?)?;
    let priority = words.next()?.parse().ok()?;
    if words.next().is_some() || name.is_empty() || name.len() > 64 {
        return None;
    }
    Some(Notice {
        instance,
        name: name.to_owned(),
        state,
        priority,
    })
}

/// An instance's (or the group's) last reported state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstanceState {
    pub name: String,
    /// `instance` or `group`.
    pub kind: &'static str,
    pub state: VrrpState,
    pub priority: u8,
    /// RFC 3339: when keepalived reported it.
    pub since: String,
}

pub(crate) type States = BTreeMap<String, InstanceState>;

/// Why an instance moved from `from` to `to`, in words for the event log.
pub(crate) fn reason(from: Option<VrrpState>, to: VrrpState) -> &'static str {
    use VrrpState::*;
    match (from, to) {
        (_, Fault) => {
            "this poolgate is not serving (its health check failed) or the VRRP interface is down"
        }
        (Some(Backup), Master) => {
            "the peer stopped advertising or gave up the addresses: this appliance took them over"
        }
        (Some(Fault), Master) | (None, Master) => {
            "no other master was heard: this appliance holds the addresses"
        }
        (Some(Master), Master) | (Some(Stop | Deleted), Master) => {
            "this appliance holds the addresses"
        }
        (Some(Master), Backup) => "a peer with higher priority took the addresses over",
        (Some(Fault), Backup) => "this poolgate serves again; the peer keeps the addresses",
        (_, Backup) => "the peer holds the addresses; this appliance stands by",
        (_, Stop) => "keepalived stopped",
        (_, Deleted) => "the instance was removed from keepalived's configuration",
    }
}

/// Record `notice` in `states`, with an event when the state changed.
pub(crate) fn record(states: &watch::Sender<States>, events: &EventLog, notice: Notice) {
    let mut changed = None;
    states.send_if_modified(|states| {
        let previous = states.get(&notice.name).map(|s| s.state);
        if previous == Some(notice.state)
            && states.get(&notice.name).map(|s| s.priority) == Some(notice.priority)
        {
            return false;
        }
        if previous.is_none() && states.len() >= MAX_NAMES {
            return false;
        }
        if previous != Some(notice.state) {
            changed = Some(previous);
        }
        states.insert(
            notice.name.clone(),
            InstanceState {
                name: notice.name.clone(),
                kind: if notice.instance { "instance" } else { "group" },
                state: notice.state,
                priority: notice.priority,
                since: crate::store::now_rfc3339(),
            },
        );
        true
    });
    if let Some(previous) = changed
        && notice.instance
    {
        let why = reason(previous, notice.state);
        let from = previous.map_or("UNKNOWN", VrrpState::as_str);
        tracing::info!(instance = %notice.name, from, to = notice.state.as_str(), priority = notice.priority, "VRRP state changed: {why}");
        events.record(
            NewEvent::new(
                EventKind::System,
                format!(
                    "VRRP {} is {} (was {from}): {why}",
                    notice.name,
                    notice.state.as_str()
                ),
            )
            .detail(serde_json::json!({
                "instance": notice.name,
                "from": from,
                "to": notice.state.as_str(),
                "priority": notice.priority,
                "reason": why,
            })),
        );
    }
}

/// Make the FIFO at `path` unless a FIFO is there (anything else in its
/// place is removed first).
pub(crate) fn make_fifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(_) => std::fs::remove_file(path)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
}

/// Once `enabled` (VRRP settings are stored), read the FIFO at `path`
/// into `states` until `stop`.
pub(crate) async fn follow(
    path: PathBuf,
    mut enabled: watch::Receiver<bool>,
    states: watch::Sender<States>,
    events: EventLog,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => return,
        on = enabled.wait_for(|on| *on) => if on.is_err() { return },
    }
    if let Err(error) = make_fifo(&path) {
        tracing::error!(fifo = %path.display(), %error, "Cannot make keepalived's notify FIFO; VRRP state is not shown");
        return;
    }
    let fifo = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
    {
        Ok(fifo) => fifo,
        Err(error) => {
            tracing::error!(fifo = %path.display(), %error, "Cannot open keepalived's notify FIFO; VRRP state is not shown");
            return;
        }
    };
    let mut lines = tokio::io::BufReader::with_capacity(MAX_LINE, fifo);
    let mut line = Vec::with_capacity(MAX_LINE);
    loop {
        line.clear();
        let read = tokio::select! {
            () = stop.cancelled() => return,
            read = read_line(&mut lines, &mut line) => read,
        };
        match read {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "Cannot read keepalived's notify FIFO");
                return;
            }
        }
        let text = String::from_utf8_lossy(&line);
        match parse(&text) {
            Some(notice) => record(&states, &events, notice),
            None => tracing::debug!(line = %text.trim(), "keepalived notice not followed"),
        }
    }
}

/// One line of at most [`MAX_LINE`] bytes into `line`: `Ok(true)` for a
/// whole line, `Ok(false)` for an overlong one (skipped to its end).
async fn read_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut overlong = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (take, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take <= MAX_LINE {
            line.extend_from_slice(&buf[..take]);
        } else {
            overlong = true;
        }
        reader.consume(take);
        if end {
            return Ok(!overlong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_lines_parse() {
        assert_eq!(
            parse("INSTANCE \"poolgate_v4\" MASTER 100\n"),
            Some(Notice {
                instance: true,
                name: "poolgate_v4".to_owned(),
                state: VrrpState::Master,
                priority: 100,
            })
        );
        assert_eq!(
            parse("GROUP \"poolgate\" FAULT 0").map(|n| (n.instance, n.state)),
            Some((false, VrrpState::Fault))
        );
        for line in [
            "INSTANCE \"poolgate_v4\" MASTER_RX_LOWER_PRI 100",
            "INSTANCE \"poolgate_v4\" MASTER 300",
            "INSTANCE poolgate_v4 MASTER 100",
            "INSTANCE \"\" MASTER 100",
            "VS [10.0.0.1]:80 UP",
            "INSTANCE \"x\" MASTER 100 extra",
            "",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }

    #[test]
    fn every_transition_has_a_reason() {
        use VrrpState::*;
        let all = [Master, Backup, Fault, Stop, Deleted];
        for to in all {
            assert!(!reason(None, to).is_empty());
            for from in all {
                assert!(!reason(Some(from), to).is_empty());
            }
        }
        assert!(reason(Some(Backup), Master).contains("took them over"));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.push(b'\n');
        input.extend_from_slice(b"INSTANCE \"a\" BACKUP 90\n");
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut line = Vec::new();
        assert!(!read_line(&mut reader, &mut line).await.expect("read"));
        line.clear();
        assert!(read_line(&mut reader, &mut line).await.expect("read"));
        assert_eq!(
            parse(&String::from_utf8_lossy(&line)).map(|n| n.state),
            Some(VrrpState::Backup)
        );
    }
}
