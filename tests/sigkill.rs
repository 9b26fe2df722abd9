//! SIGKILL durability (docs/DESIGN.md §6): "A process killed at any instant (SIGKILL) reopens to a
//! valid prefix that holds every entry whose `save` had returned in durable mode."
//!
//! `sigkill_rounds` re-executes this test binary as a child process running only
//! `sigkill_child_writer` (selected with `--exact`, switched on by an environment variable; without
//! it the child test returns at once). The child opens the directory with default options
//! (`sync_writes: true`) and appends batches with payloads derived from the index alone, and after
//! every `save` that returned it prints `ACK <last index>` (and `SNAP <index>` after every
//! `create_snapshot` that returned) on stdout. The parent reads those lines from the pipe and kills
//! the child with SIGKILL at a pseudo-random instant (seeded per round), drains the lines still in
//! the pipe (they were acknowledged too), reopens the directory and checks:
//!
//! * open succeeds and `last_index() >= ` the last acknowledged index;
//! * every entry in `[first_index(), last_index()]` is there with the exact payload for its index
//!   (no garbage past the acknowledged prefix either);
//! * the hard state is the one of an acknowledged-or-later save: `acked <= commit <= last_index()`;
//! * the snapshot is at least the last acknowledged one and carries its data and term.
//!
//! The next round writes on into the same directory from `last_index() + 1`. Kill instants are
//! placed around the 30,000-entry file boundaries: far from a boundary the child writes big
//! batches, near one it writes 1–64 entries per save, and every round's kill threshold is set
//! relative to the next boundary, so every round runs into a rotation and the log crosses many.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::prelude::*;
use raft::Storage;
use raftwal::DiskStorage;

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;

use entries::{ctx, term_of};
use layout::SLOTS_PER_FILE;

const ENV_DIR: &str = "RAFTWAL_SIGKILL_WRITER_DIR";
const ENV_ROUND: &str = "RAFTWAL_SIGKILL_WRITER_ROUND";
const CHILD_TEST: &str = "sigkill_child_writer";

const ROUNDS: u64 = 24;

// ---------------------------------------------------------------------------------------------
// deterministic content
// ---------------------------------------------------------------------------------------------

fn expected_entry(i: u64) -> Entry {
    let mut e = Entry::default();
    e.index = i;
    e.term = term_of(i);
    // mostly 0-32 bytes; every 97th entry is 1,600 bytes
    let reps = if i.is_multiple_of(97) { 200 } else { i % 5 };
    let mut data = Vec::with_capacity(reps as usize * 8);
    for _ in 0..reps {
        data.extend_from_slice(&i.to_le_bytes());
    }
    e.data = Bytes::from(data);
    if i.is_multiple_of(3) {
        let n = (i % 8 + 1) as usize;
        e.context = Bytes::copy_from_slice(&(!i).to_le_bytes()[..n]);
    }
    e
}

fn snap_payload(i: u64) -> Bytes {
    Bytes::from(
        (0..(16 + i % 300))
            .map(|k| (i.wrapping_add(k * 7)) as u8)
            .collect::<Vec<u8>>(),
    )
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_1234_5678)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn next_boundary(last: u64) -> u64 {
    (last / SLOTS_PER_FILE + 1) * SLOTS_PER_FILE
}

// ---------------------------------------------------------------------------------------------
// the child
// ---------------------------------------------------------------------------------------------

/// The writer. Runs only when the parent sets `RAFTWAL_SIGKILL_WRITER_DIR`; a no-op otherwise.
#[test]
fn sigkill_child_writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let round: u64 = std::env::var(ENV_ROUND)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut rng = Rng::new(round.wrapping_mul(1_000_003) ^ 0xC0FFEE);
    let store = DiskStorage::open(&dir).expect("child: open");
    let mut last = store.last_index().expect("child: last_index");
    let out = std::io::stdout();
    let started = Instant::now();
    let mut saves = 0u64;
    // Bounded: the parent kills the child long before this.
    while started.elapsed() < Duration::from_secs(40) && saves < 100_000 {
        let to_boundary = next_boundary(last) - last; // >= 1
        let since_boundary = last % SLOTS_PER_FILE;
        let n = if to_boundary <= 1_200 || since_boundary < 600 {
            rng.range(1, 64)
        } else {
            rng.range(600, 2_500)
        };
        let entries: Vec<Entry> = (last + 1..=last + n).map(expected_entry).collect();
        let mut hs = HardState::default();
        hs.term = term_of(last + n);
        hs.vote = 1;
        hs.commit = last + n;
        store
            .save(&hs, &entries, &Snapshot::default())
            .expect("child: save");
        last += n;
        saves += 1;
        {
            let mut o = out.lock();
            // one write per line: a line in the pipe is a complete acknowledgement
            o.write_all(format!("ACK {last}\n").as_bytes()).unwrap();
            o.flush().unwrap();
        }
        if rng.next().is_multiple_of(25) {
            let first = store.first_index().expect("child: first_index");
            let i = last.saturating_sub(rng.range(500, 4_000));
            if i >= first {
                store
                    .create_snapshot(i, None, snap_payload(i))
                    .expect("child: create_snapshot");
                let mut o = out.lock();
                o.write_all(format!("SNAP {i}\n").as_bytes()).unwrap();
                o.flush().unwrap();
            }
        }
    }
    let mut o = out.lock();
    o.write_all(b"DONE\n").unwrap();
    o.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------
// the parent
// ---------------------------------------------------------------------------------------------

struct RoundResult {
    acked: u64,
    snap_acked: u64,
    lines: usize,
}

/// Start a writer child on `dir`, kill it with SIGKILL once it has acknowledged `threshold`
/// (plus `extra_lines` more lines and `delay`), and return what it acknowledged.
fn run_child(
    dir: &std::path::Path,
    round: u64,
    threshold: u64,
    extra_lines: u64,
    delay: Duration,
) -> RoundResult {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(ENV_DIR, dir)
        .env(ENV_ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the writer child");

    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // a line cut short by the kill is not an acknowledgement
                    if line.ends_with('\n') && tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut res = RoundResult {
        acked: 0,
        snap_acked: 0,
        lines: 0,
    };
    let parse = |line: &str, res: &mut RoundResult| {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("ACK ") {
            res.acked = res.acked.max(v.parse().expect("ACK line"));
            res.lines += 1;
        } else if let Some(v) = line.strip_prefix("SNAP ") {
            res.snap_acked = res.snap_acked.max(v.parse().expect("SNAP line"));
            res.lines += 1;
        } else if line == "DONE" {
            res.lines += 1;
        }
        // anything else is libtest's own output
    };

    let mut reached: Option<usize> = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                parse(&line, &mut res);
                if line.starts_with("DONE") {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "round {round}: the writer finished before it was killed (acked {})",
                        res.acked
                    );
                }
                if reached.is_none() && res.acked >= threshold {
                    reached = Some(res.lines);
                }
                if let Some(at) = reached {
                    if (res.lines - at) as u64 >= extra_lines {
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "round {round}: no output from the writer for 30 s (acked {})",
                    res.acked
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait");
                let err = err_reader.join().unwrap_or_default();
                panic!(
                    "round {round}: the writer exited on its own ({status:?}) after acking {}\n\
                     --- child stderr ---\n{err}",
                    res.acked
                );
            }
        }
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the writer"); // Child::kill sends SIGKILL on Unix
    let status = child.wait().expect("wait for the writer");
    reader.join().unwrap();
    // lines already in the pipe when the child died were written after their save returned
    for line in rx.try_iter() {
        parse(&line, &mut res);
        assert!(
            !line.starts_with("DONE"),
            "round {round}: writer finished before the kill"
        );
    }
    let err = err_reader.join().unwrap_or_default();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: the writer did not die of SIGKILL: {status:?}\n--- child stderr ---\n{err}"
    );
    res
}

/// Reopen after the kill and check everything against what was acknowledged.
/// Returns (first_index, last_index).
fn verify(dir: &std::path::Path, round: u64, acked: u64, snap_acked: u64) -> (u64, u64) {
    let s = DiskStorage::open(dir)
        .unwrap_or_else(|e| panic!("round {round}: open after SIGKILL failed: {e}"));
    let first = s.first_index().expect("first_index");
    let last = s.last_index().expect("last_index");
    assert!(
        last >= acked,
        "round {round}: last_index {last} < last acknowledged index {acked}"
    );
    assert!(
        first <= acked + 1,
        "round {round}: first_index {first} is past the acknowledged log (acked {acked}, \
         acked snapshot {snap_acked})"
    );
    let snap_index = first - 1;
    assert!(
        snap_index >= snap_acked,
        "round {round}: snapshot index {snap_index} < acknowledged snapshot {snap_acked}"
    );
    if snap_index > 0 {
        assert_eq!(
            s.term(snap_index).ok(),
            Some(term_of(snap_index)),
            "round {round}: term of the snapshot index {snap_index}"
        );
        let snap = s
            .snapshot(0, 0)
            .unwrap_or_else(|e| panic!("round {round}: snapshot(0, 0): {e}"));
        assert_eq!(
            snap.get_metadata().index,
            snap_index,
            "round {round}: snapshot index"
        );
        assert_eq!(
            snap.get_metadata().term,
            term_of(snap_index),
            "round {round}: snapshot term"
        );
        assert!(
            snap.data == snap_payload(snap_index),
            "round {round}: snapshot data at {snap_index} differs ({} bytes)",
            snap.data.len()
        );
    }
    // every entry, acknowledged or not, must be the one written for its index
    let mut lo = first;
    while lo <= last {
        let hi = (lo + 4_096).min(last + 1);
        let got = s
            .entries(lo, hi, None, ctx())
            .unwrap_or_else(|e| panic!("round {round}: entries({lo}, {hi}): {e}"));
        assert_eq!(
            got.len() as u64,
            hi - lo,
            "round {round}: entries({lo}, {hi}) length"
        );
        for (k, e) in got.iter().enumerate() {
            let i = lo + k as u64;
            let want = expected_entry(i);
            assert!(
                e.index == want.index
                    && e.term == want.term
                    && e.get_entry_type() == want.get_entry_type()
                    && e.data == want.data
                    && e.context == want.context,
                "round {round}: entry {i} (acked up to {acked}, log [{first}, {last}]) differs:\n \
                 got  {e:?}\n want {want:?}"
            );
            assert_eq!(s.term(i).ok(), Some(want.term), "round {round}: term({i})");
        }
        lo = hi;
    }
    let st = s.initial_state().expect("initial_state");
    let hs = st.hard_state;
    assert!(
        hs.commit <= last,
        "round {round}: durable commit {} points past the last entry {last}",
        hs.commit
    );
    assert!(
        hs.commit >= acked,
        "round {round}: durable commit {} is older than the last acknowledged save ({acked})",
        hs.commit
    );
    assert_eq!(
        hs.term,
        term_of(hs.commit),
        "round {round}: hard state term"
    );
    assert_eq!(
        hs.vote,
        if hs.commit == 0 { 0 } else { 1 },
        "round {round}: hard state vote"
    );
    s.close().expect("close after verify");
    (first, last)
}

#[test]
fn sigkill_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut last = 0u64;
    let mut crossed = 0u64;
    for round in 0..ROUNDS {
        let mut rng = Rng::new(0xABCD_0000 + round);
        let boundary = next_boundary(last);
        // Kill around the next file boundary: just before it (the kill may land in the save that
        // rotates), right after it (a fresh file), or well after it.
        let threshold = match rng.next() % 10 {
            0..=2 => boundary.saturating_sub(rng.range(0, 64)),
            3..=6 => boundary + rng.range(1, 64),
            _ => boundary + rng.range(65, 3_000),
        }
        .max(last + 1);
        let extra_lines = rng.range(0, 3);
        let delay = Duration::from_micros(rng.range(0, 3_000));
        let res = run_child(dir.path(), round, threshold, extra_lines, delay);
        assert!(
            res.acked >= threshold,
            "round {round}: acked {} < threshold",
            res.acked
        );
        let (first, new_last) = verify(dir.path(), round, res.acked, res.snap_acked);
        if new_last / SLOTS_PER_FILE > last / SLOTS_PER_FILE {
            crossed += new_last / SLOTS_PER_FILE - last / SLOTS_PER_FILE;
        }
        eprintln!(
            "round {round}: killed at acked {} (threshold {threshold}, boundary {boundary}); \
             reopened to [{first}, {new_last}] in {:.1?}",
            res.acked,
            started.elapsed()
        );
        last = new_last;
    }
    assert!(
        last > SLOTS_PER_FILE && crossed >= 1,
        "the rounds never crossed a 30,000-entry boundary (last index {last})"
    );
    eprintln!(
        "{ROUNDS} rounds, {crossed} boundaries crossed, final last index {last}, {:.1?}",
        started.elapsed()
    );
}
