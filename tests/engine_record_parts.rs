//! A journal record may hold several parts for one group (a batch saving a group twice, SPEC
//! §9's "parts for the same group apply in batch order", or two callers merged into one
//! commit), and a group's meta page may be stored between two of them: by an installed
//! snapshot, by the writer's overwrite that removes a log file, by a checkpoint or a
//! `create_snapshot`. The page then records how many of the record's parts it reflects
//! (`journal_parts`, docs/FORMAT.md), and replay applies only the rest. It once recorded the
//! record before, and replay applied the whole record again on top of the page: an earlier
//! part's entries past the install's snapshot or past the overwrite's start left a gap, and
//! the root never opened again after a kill (found by a review, 2026-12-05).

#[path = "common/entries.rs"]
mod entries;
#[path = "common/roots.rs"]
mod roots;

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{Engine, EngineOptions, GroupStorage, WriteBatch};

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    let mut h = HardState::default();
    (h.term, h.vote, h.commit) = (term, vote, commit);
    h
}

fn run(group: u64, lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi)
        .map(|i| entries::entry_in_group(i, term, group))
        .collect()
}

fn snapshot_at(index: u64, term: u64, voters: &[u64]) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters.to_vec();
    s.data = Bytes::from(format!("state at {index}"));
    s
}

/// What the tests compare: first and last index, hard state, and every entry.
fn state(g: &GroupStorage) -> (u64, u64, HardState, Vec<Entry>) {
    let (first, last) = (g.first_index().unwrap(), g.last_index().unwrap());
    let es = g
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap();
    (first, last, g.initial_state().unwrap().hard_state, es)
}

/// A kill image of `root` (copied until two copies in a row agree, so that no background
/// write fell between the copies of two files), opened.
fn killed(root: &std::path::Path, to: &std::path::Path) -> Engine {
    let mut last = None;
    for _ in 0..50 {
        let _ = std::fs::remove_dir_all(to);
        roots::kill_image(root, to);
        let now = tree_bytes(to);
        if last.as_ref() == Some(&now) {
            break;
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(10));
    }
    Engine::open(to).unwrap_or_else(|e| panic!("the kill image of acknowledged writes: {e}"))
}

/// Every file under `dir` (but the lock file) and its bytes.
fn tree_bytes(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for ent in std::fs::read_dir(&d).unwrap().flatten() {
            let p = ent.path();
            if p.is_dir() {
                stack.push(p);
            } else if ent.file_name() != "LOCK" {
                if let Ok(b) = std::fs::read(&p) {
                    out.insert(p, b);
                }
            }
        }
    }
    out
}

/// Group 1 holding entries 1..=100 at term 1, commit 10; then `batch`; then the group live,
/// after a kill and after a clean reopen must be `want` (first, last, hard state) with the
/// same entries.
fn batch_then_kill(batch: impl Fn(&mut WriteBatch), want: (u64, u64, HardState)) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let e = Engine::open(&root).unwrap();
    let g = e.create_group(1, 1).unwrap();
    g.save(&hs(1, 1, 10), &run(1, 1, 100, 1), &Snapshot::default())
        .unwrap();
    let mut b = WriteBatch::new();
    batch(&mut b);
    e.write(&mut b).expect("a valid batch");
    let live = state(&g);
    assert_eq!((live.0, live.1, live.2.clone()), want, "live");
    let e2 = killed(&root, &d.path().join("image"));
    assert_eq!(state(&e2.group(1).unwrap()), live, "after a kill");
    e2.close().unwrap();
    e.close().unwrap();
    let e3 = Engine::open(&root).unwrap();
    assert_eq!(state(&e3.group(1).unwrap()), live, "after a clean reopen");
}

/// An append, then a received snapshot below it (raft replaces the log) in one batch: the
/// install's page reflects the append, and replay does not apply it again past the snapshot.
/// Failed before: "holds group 1's entries from index 101, but the group's log ends at 50".
#[test]
fn an_append_then_an_install_in_one_batch_survives_a_kill() {
    batch_then_kill(
        |b| {
            b.save(
                1,
                &HardState::default(),
                &run(1, 101, 110, 1),
                &Snapshot::default(),
            );
            b.save(
                1,
                &hs(2, 2, 50),
                &run(1, 51, 60, 2),
                &snapshot_at(50, 2, &[1, 2]),
            );
        },
        (51, 60, hs(2, 2, 50)),
    );
}

/// An install, then an append after it, then another install below the append, in one batch.
#[test]
fn two_installs_and_an_append_between_in_one_batch_survive_a_kill() {
    batch_then_kill(
        |b| {
            b.save(
                1,
                &hs(2, 2, 40),
                &run(1, 41, 45, 2),
                &snapshot_at(40, 2, &[1]),
            );
            b.save(
                1,
                &HardState::default(),
                &run(1, 46, 70, 2),
                &Snapshot::default(),
            );
            b.save(
                1,
                &hs(3, 2, 55),
                &run(1, 56, 58, 3),
                &snapshot_at(55, 3, &[1, 2]),
            );
        },
        (56, 58, hs(3, 2, 55)),
    );
}

/// An append, then an overwrite below it across the files' boundary, in one batch; the writer
/// moves the overwrite into the files, removing the second file after a page of its own.
/// Failed before: "holds group 1's entries from index 30011, but the group's log ends at
/// 29995".
#[test]
fn an_append_then_an_overwrite_across_files_in_one_batch_survives_a_kill() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    {
        let e = Engine::open(&root).unwrap();
        let g = e.create_group(1, 1).unwrap();
        g.save(
            &hs(1, 1, 29_980),
            &run(1, 1, 30_010, 1),
            &Snapshot::default(),
        )
        .unwrap();
        // The closing checkpoint: a durable page relying on both files.
        e.close().unwrap();
    }
    let e = Engine::open(&root).unwrap();
    let g = e.group(1).unwrap();
    assert_eq!(g.num_log_files(), 2);
    let big = |i: u64, t: u64| {
        let mut en = entries::entry_in_group(i, t, 1);
        en.data = Bytes::from(vec![(i % 251) as u8; 8 << 10]);
        en
    };
    let mut b = WriteBatch::new();
    let appended: Vec<Entry> = (30_011..=30_020).map(|i| big(i, 1)).collect();
    let overwrite: Vec<Entry> = (29_996..=29_999).map(|i| big(i, 2)).collect();
    b.save(1, &HardState::default(), &appended, &Snapshot::default());
    b.save(1, &hs(2, 1, 29_980), &overwrite, &Snapshot::default());
    e.write(&mut b).expect("a valid batch");
    let live = state(&g);
    assert_eq!((live.0, live.1), (1, 29_999));
    assert_eq!(live.3[29_995..], overwrite[..]);
    let start = Instant::now();
    while g.num_log_files() != 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        g.num_log_files(),
        1,
        "the writer moved the overwrite into the files"
    );
    assert_eq!(state(&g), live);
    let e2 = killed(&root, &d.path().join("image"));
    assert_eq!(state(&e2.group(1).unwrap()), live, "after a kill");
}

/// `create_snapshot` stores the group's page between two parts of one record for it (the
/// commit that merged two callers' batches for the group paused between them, here forced by
/// one batch whose second part overwrites below the first): whichever page is durable, the
/// kill image opens with the whole batch.
#[test]
fn a_snapshot_taken_while_a_batch_overwrites_its_own_append_survives_a_kill() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let opts = EngineOptions {
        checkpoint_bytes: 64 << 10,
        journal_segment_bytes: 64 << 10,
        ..Default::default()
    };
    let e = Engine::open_with(&root, opts).unwrap();
    let g = e.create_group(1, 1).unwrap();
    g.save(&hs(1, 1, 50), &run(1, 1, 100, 1), &Snapshot::default())
        .unwrap();
    for round in 0..20u64 {
        let mut b = WriteBatch::new();
        let last = g.last_index().unwrap();
        let term = 2 + round;
        b.save(
            1,
            &HardState::default(),
            &run(1, last + 1, last + 20, term - 1),
            &Snapshot::default(),
        );
        b.save(
            1,
            &hs(term, 1, 50),
            &run(1, last - 5, last + 3, term),
            &Snapshot::default(),
        );
        std::thread::scope(|s| {
            s.spawn(|| e.write(&mut b).expect("a valid batch"));
            s.spawn(|| {
                let _ = g.create_snapshot(50 + round, None, vec![round as u8; 16]);
            });
        });
    }
    let live = state(&g);
    let e2 = killed(&root, &d.path().join("image"));
    assert_eq!(state(&e2.group(1).unwrap()), live, "after a kill");
}
