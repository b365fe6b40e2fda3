//! Every acknowledged store write survives SIGKILL. The test re-runs its own
//! executable as a child that streams admin-state writes through the store's
//! public API and prints an acknowledgement after each returns; the parent
//! kills it mid-stream and checks each acknowledged write is in the database.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolgate::config::{self, AdminState};
use poolgate::store::Store;

const CHILD_ENV: &str = "POOLGATE_DURABILITY_CHILD_DIR";
const MEMBERS: [&str; 3] = ["fe01", "fe02", "fe03"];

fn example() -> config::Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/lync-pool.toml");
    config::load(&path).expect("example validates")
}

fn write_for(seq: u64) -> (&'static str, AdminState) {
    (
        MEMBERS[(seq % 3) as usize],
        AdminState::ALL[((seq / 3) % 3) as usize],
    )
}

/// The writer: runs only when started by `acknowledged_writes_survive_sigkill`.
#[test]
fn durability_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).expect("open store");
    let mut out = std::io::stdout().lock();
    // Bounded: the parent kills us long before this ends.
    for seq in 0..100_000u64 {
        let (member, state) = write_for(seq);
        store
            .set_admin_state("pool01", member, state, &format!("writer-{seq}"))
            .expect("write");
        writeln!(out, "ack {seq}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = example();
    Store::open(dir.path())
        .expect("open")
        .record_config(&config, "test", &config::diff(None, &config), None)
        .expect("commit");

    let mut child = Command::new(std::env::current_exe().expect("test exe"))
        .args([
            "--exact",
            "durability_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut acked: Vec<u64> = Vec::new();
    let started = Instant::now();
    for line in stdout.lines() {
        let line = line.expect("line");
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.push(seq.trim().parse().expect("seq"));
        }
        if acked.len() >= 300 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    // Kill mid-stream: the writer is already inside its next write.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        acked.len() >= 50,
        "writer acknowledged only {} writes",
        acked.len()
    );

    let store = Store::open(dir.path()).expect("reopen after kill");
    let logged: HashSet<String> = store
        .events_after(0, 1_000_000)
        .expect("events")
        .into_iter()
        .filter_map(|event| Some(event.message.split(' ').next()?.to_owned()))
        .collect();
    for seq in &acked {
        assert!(
            logged.contains(&format!("writer-{seq}")),
            "acknowledged write {seq} lost"
        );
    }
    // Each member holds its last acknowledged state, or the state of the one
    // write after it, which may have committed before the kill unacknowledged.
    let last_seq = *acked.last().expect("some");
    let mut last: BTreeMap<&str, AdminState> = BTreeMap::new();
    for seq in &acked {
        let (member, state) = write_for(*seq);
        last.insert(member, state);
    }
    let states = store.admin_states().expect("states");
    let (next_member, next_state) = write_for(last_seq + 1);
    for (member, state) in last {
        let stored = states[&("pool01".to_owned(), member.to_owned())];
        assert!(
            stored == state || (member == next_member && stored == next_state),
            "{member}: stored {stored:?}, last acknowledged {state:?}"
        );
    }
}
