//! Engine rules of raftwal beyond the raft-rs `Storage` contract (docs/DESIGN.md §2–§4): log file
//! rotation, exact entry round-trip, overwrite and compaction across files, rejected appends,
//! received snapshots, hard/conf state persistence, truncation of payloads, meta integers, the
//! directory lock, unsynced writes, thread safety and tolerance of unknown files.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use raft::prelude::*;
use raft::{Error as RaftError, Storage, StorageError, NO_LIMIT};
use raftwal::{DiskStorage, Error, MetaInfo, Options};

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/roots.rs"]
mod roots;
#[path = "common/truncations.rs"]
mod truncations;

use entries::{ctx, entry, term_of};
use layout::{PAYLOADS_AT, SLOTS_PER_FILE, SPARE_FILE};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn fast() -> Options {
    Options {
        sync_writes: false,
        ..Default::default()
    }
}

fn compacted<T>() -> raft::Result<T> {
    Err(RaftError::Store(StorageError::Compacted))
}

fn unavailable<T>() -> raft::Result<T> {
    Err(RaftError::Store(StorageError::Unavailable))
}

fn r<T>(res: Result<T, Error>) -> raft::Result<T> {
    res.map_err(RaftError::from)
}

/// Saves `entry(i, term(i))` for `i` in `lo..=hi` in batches of 5,000.
fn append_range(s: &DiskStorage, lo: u64, hi: u64, term: impl Fn(u64) -> u64) {
    let mut i = lo;
    while i <= hi {
        let end = (i + 4_999).min(hi);
        let batch: Vec<Entry> = (i..=end).map(|j| entry(j, term(j))).collect();
        s.save(&HardState::default(), &batch, &Snapshot::default())
            .unwrap_or_else(|e| panic!("save {i}..={end}: {e}"));
        i = end + 1;
    }
}

/// Reads `lo..=hi` back in chunks that straddle file boundaries and compares every field.
fn check_range(s: &DiskStorage, lo: u64, hi: u64, term: impl Fn(u64) -> u64, when: &str) {
    let mut i = lo;
    while i <= hi {
        let end = (i + 7_918).min(hi);
        let got = s
            .entries(i, end + 1, NO_LIMIT, ctx())
            .unwrap_or_else(|e| panic!("{when}: entries({i}, {}): {e:?}", end + 1));
        assert_eq!(
            got.len() as u64,
            end - i + 1,
            "{when}: entries({i}, {})",
            end + 1
        );
        for (k, e) in got.iter().enumerate() {
            let idx = i + k as u64;
            let want = entry(idx, term(idx));
            if *e != want {
                panic!("{when}: entry {idx} differs:\n got  {e:?}\n want {want:?}");
            }
        }
        i = end + 1;
    }
}

/// Number of `NNNNN.wal` files in `dir`.
/// Runs `check` on the live store, closes it, reopens `dir` with `opts`, runs `check` on the
/// reopened store and returns it.
fn check_live_then_reopened(
    s: DiskStorage,
    dir: &Path,
    opts: Options,
    check: impl Fn(&DiskStorage, &str),
) -> DiskStorage {
    check(&s, "live");
    s.close().unwrap();
    let s = DiskStorage::open_with(dir, opts).unwrap();
    check(&s, "reopened");
    s
}

fn wal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|d| d.ok())
        .filter(|d| {
            let name = d.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".wal") {
                Some(stem) => !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()),
                None => false,
            }
        })
        .count()
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    let mut h = HardState::default();
    h.term = term;
    h.vote = vote;
    h.commit = commit;
    h
}

fn cs(voters: &[u64], learners: &[u64]) -> ConfState {
    let mut c = ConfState::default();
    c.voters = voters.to_vec();
    c.learners = learners.to_vec();
    c
}

fn snapshot(index: u64, term: u64, conf: ConfState, data: &'static [u8]) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(conf);
    s.data = Bytes::from_static(data);
    s
}

fn all_entries(s: &DiskStorage) -> Vec<Entry> {
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    s.entries(first, last + 1, NO_LIMIT, ctx()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// rotation and round trip
// ---------------------------------------------------------------------------------------------

#[test]
fn log_rotates_to_a_new_file_every_30000_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    let steps: [(u64, usize); 6] = [
        (SLOTS_PER_FILE, 1),
        (SLOTS_PER_FILE + 1, 2),
        (2 * SLOTS_PER_FILE, 2),
        (2 * SLOTS_PER_FILE + 1, 3),
        (3 * SLOTS_PER_FILE, 3),
        (3 * SLOTS_PER_FILE + 1, 4),
    ];
    let mut last = 0;
    for (upto, files) in steps {
        append_range(&s, last + 1, upto, term_of);
        last = upto;
        assert_eq!(s.last_index(), Ok(upto));
        assert_eq!(s.num_entries(), upto as usize, "num_entries at {upto}");
        assert_eq!(
            s.num_log_files(),
            files,
            "num_log_files after {upto} entries"
        );
    }
    s.sync().unwrap();
    assert_eq!(wal_files(dir.path()), 4);
    check_range(&s, 1, last, term_of, "live");
    s.close().unwrap();

    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    assert_eq!(s.num_log_files(), 4, "reopened");
    assert_eq!(s.num_entries(), last as usize, "reopened");
    assert_eq!(s.first_index(), Ok(1), "reopened");
    assert_eq!(s.last_index(), Ok(last), "reopened");
    check_range(&s, 1, last, term_of, "reopened");
    s.close().unwrap();
}

#[test]
fn entries_round_trip_exactly_across_files_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let last = SLOTS_PER_FILE + 5_000;
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    append_range(&s, 1, last, term_of);
    s.sync().unwrap();
    let check = |s: &DiskStorage, when: &str| {
        check_range(s, 1, last, term_of, when);
        for i in [1, 2, 9_999, 10_000, 29_999, 30_000, 30_001, 30_002, last] {
            assert_eq!(s.term(i), Ok(term_of(i)), "{when}: term({i})");
        }
        assert_eq!(s.term(0), Ok(0), "{when}: term(0)");
        assert_eq!(s.term(last + 1), unavailable(), "{when}");
        // A range straddling the file boundary, with and without a size limit.
        let want: Vec<Entry> = (29_990..30_010).map(|i| entry(i, term_of(i))).collect();
        assert_eq!(
            s.entries(29_990, 30_010, NO_LIMIT, ctx()),
            Ok(want.clone()),
            "{when}"
        );
        for max in [0u64, 1, 100, 500, 1_000, 10_000] {
            let mut w = want.clone();
            raft::util::limit_size(&mut w, Some(max));
            assert_eq!(
                s.entries(29_990, 30_010, max, ctx()),
                Ok(w),
                "{when}: max_size {max}"
            );
        }
    };
    check_live_then_reopened(s, dir.path(), Options::default(), check)
        .close()
        .unwrap();
}

#[test]
fn entry_fields_round_trip_exactly() {
    let mut ents = Vec::new();
    let mut add = |ty: EntryType, term: u64, data: Vec<u8>, context: Vec<u8>| {
        let mut e = Entry::default();
        e.index = ents.len() as u64 + 1;
        e.term = term;
        e.entry_type = ty;
        e.data = Bytes::from(data);
        e.context = Bytes::from(context);
        ents.push(e);
    };
    // empty everything
    add(EntryType::EntryNormal, 1, vec![], vec![]);
    // conf change with a real encoded-looking payload and a context
    add(
        EntryType::EntryConfChange,
        1,
        vec![8, 0, 16, 2],
        b"cc-context".to_vec(),
    );
    add(EntryType::EntryConfChangeV2, 2, vec![0xFF; 33], vec![]);
    add(
        EntryType::EntryConfChangeV2,
        2,
        vec![],
        b"only context".to_vec(),
    );
    add(EntryType::EntryConfChange, 2, vec![], vec![]);
    add(EntryType::EntryNormal, 3, vec![], vec![0]);
    add(EntryType::EntryNormal, 3, vec![0; 1], vec![]);
    // all byte values
    add(
        EntryType::EntryNormal,
        3,
        (0..=255u8).collect(),
        (0..=255u8).rev().collect(),
    );
    // a large payload (several pages) and a large context
    add(
        EntryType::EntryNormal,
        u64::MAX / 2,
        (0..300_000u32).map(|i| (i * 7 + 3) as u8).collect(),
        vec![0x5A; 70_000],
    );
    add(
        EntryType::EntryNormal,
        u64::MAX / 2,
        b"after the big one".to_vec(),
        vec![],
    );

    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    // One entry per save, then check, so each is also written at the log's tail.
    for e in &ents {
        s.save(
            &HardState::default(),
            std::slice::from_ref(e),
            &Snapshot::default(),
        )
        .unwrap();
    }
    let check = |s: &DiskStorage, when: &str| {
        assert_eq!(all_entries(s), ents, "{when}");
        for e in &ents {
            assert_eq!(
                s.entries(e.index, e.index + 1, 0, ctx()),
                Ok(vec![e.clone()]),
                "{when}: entry {}",
                e.index
            );
            assert_eq!(s.term(e.index), Ok(e.term), "{when}: term({})", e.index);
        }
    };
    check_live_then_reopened(s, dir.path(), Options::default(), check)
        .close()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// overwrite across files
// ---------------------------------------------------------------------------------------------

#[test]
fn overwrite_across_files_discards_later_entries_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    append_range(&s, 1, 70_000, |_| 1);
    s.sync().unwrap();
    assert_eq!(s.num_log_files(), 3);

    // A conflicting batch from a new leader starting at 45,000 (in the second file).
    let batch: Vec<Entry> = (45_000..45_100).map(|i| entry(i, 2)).collect();
    s.save(&hs(2, 0, 0), &batch, &Snapshot::default()).unwrap();
    s.sync().unwrap();

    let term = |i: u64| if i >= 45_000 { 2 } else { 1 };
    let check = |s: &DiskStorage, when: &str| {
        assert_eq!(s.num_log_files(), 2, "{when}: num_log_files");
        assert_eq!(wal_files(dir.path()), 2, "{when}: .wal files on disk");
        assert_eq!(s.first_index(), Ok(1), "{when}");
        assert_eq!(s.last_index(), Ok(45_099), "{when}");
        assert_eq!(s.num_entries(), 45_099, "{when}");
        assert_eq!(s.term(44_999), Ok(1), "{when}");
        assert_eq!(s.term(45_000), Ok(2), "{when}");
        assert_eq!(s.term(45_099), Ok(2), "{when}");
        assert_eq!(s.term(45_100), unavailable(), "{when}");
        assert_eq!(s.term(60_001), unavailable(), "{when}");
        assert_eq!(s.term(70_000), unavailable(), "{when}");
        assert_eq!(
            s.entries(45_000, 45_101, NO_LIMIT, ctx()),
            unavailable(),
            "{when}"
        );
        assert_eq!(
            s.entries(69_000, 70_001, NO_LIMIT, ctx()),
            unavailable(),
            "{when}"
        );
        check_range(s, 40_000, 45_099, term, when);
        check_range(s, 1, 100, term, when);
    };
    let s = check_live_then_reopened(s, dir.path(), fast(), check);

    // Growing again must not resurrect anything of the old term.
    append_range(&s, 45_100, 60_001, |_| 2);
    s.sync().unwrap();
    assert_eq!(s.num_log_files(), 3);
    check_range(&s, 44_000, 60_001, term, "regrown");
    assert_eq!(s.term(60_002), unavailable());
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_index(), Ok(60_001));
    check_range(&s, 44_000, 60_001, term, "regrown, reopened");
    s.close().unwrap();
}

#[test]
fn overwrite_at_file_boundary_keeps_file_count_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    append_range(&s, 1, 2 * SLOTS_PER_FILE + 10, |_| 1);
    assert_eq!(s.num_log_files(), 3);

    // Overwrite starting at the first entry of the second file.
    s.save(
        &HardState::default(),
        &[entry(SLOTS_PER_FILE + 1, 2)],
        &Snapshot::default(),
    )
    .unwrap();
    assert_eq!(s.last_index(), Ok(SLOTS_PER_FILE + 1));
    assert_eq!(s.num_log_files(), 2);
    assert_eq!(s.term(SLOTS_PER_FILE + 1), Ok(2));
    assert_eq!(s.term(SLOTS_PER_FILE), Ok(1));

    // Overwrite starting at the last entry of the first file.
    s.save(
        &HardState::default(),
        &[entry(SLOTS_PER_FILE, 3)],
        &Snapshot::default(),
    )
    .unwrap();
    assert_eq!(s.last_index(), Ok(SLOTS_PER_FILE));
    assert_eq!(s.num_log_files(), 1);
    assert_eq!(s.term(SLOTS_PER_FILE), Ok(3));
    assert_eq!(s.term(SLOTS_PER_FILE + 1), unavailable());
    s.sync().unwrap();
    s.close().unwrap();

    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.num_log_files(), 1);
    assert_eq!(wal_files(dir.path()), 1);
    assert_eq!(s.last_index(), Ok(SLOTS_PER_FILE));
    assert_eq!(
        s.entries(SLOTS_PER_FILE, SLOTS_PER_FILE + 1, NO_LIMIT, ctx()),
        Ok(vec![entry(SLOTS_PER_FILE, 3)])
    );
    // Rotate again.
    s.save(
        &HardState::default(),
        &[entry(SLOTS_PER_FILE + 1, 3)],
        &Snapshot::default(),
    )
    .unwrap();
    assert_eq!(s.num_log_files(), 2);
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.num_log_files(), 2);
    assert_eq!(
        s.entries(SLOTS_PER_FILE - 1, SLOTS_PER_FILE + 2, NO_LIMIT, ctx()),
        Ok(vec![
            entry(SLOTS_PER_FILE - 1, 1),
            entry(SLOTS_PER_FILE, 3),
            entry(SLOTS_PER_FILE + 1, 3)
        ])
    );
    s.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// compaction by snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn create_snapshot_deletes_files_wholly_below_snapshot_and_keeps_the_one_containing_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    append_range(&s, 1, 70_000, term_of);
    s.sync().unwrap();
    assert_eq!(s.num_log_files(), 3);

    let check_at = |s: &DiskStorage, snap: u64, files: usize, last: u64, when: &str| {
        assert_eq!(
            s.num_log_files(),
            files,
            "{when}: num_log_files at S={snap}"
        );
        assert_eq!(
            wal_files(dir.path()),
            files,
            "{when}: .wal files at S={snap}"
        );
        assert_eq!(s.first_index(), Ok(snap + 1), "{when}: first_index");
        assert_eq!(s.last_index(), Ok(last), "{when}: last_index");
        assert_eq!(s.term(snap), Ok(term_of(snap)), "{when}: term(S)");
        assert_eq!(s.term(snap - 1), compacted(), "{when}: term(S-1)");
        assert_eq!(s.term(1), compacted(), "{when}: term(1)");
        assert_eq!(
            s.entries(snap, snap + 1, NO_LIMIT, ctx()),
            compacted(),
            "{when}: entries(S, S+1)"
        );
        assert_eq!(s.uint(MetaInfo::SnapshotIndex), snap, "{when}");
        assert_eq!(s.uint(MetaInfo::SnapshotTerm), term_of(snap), "{when}");
        let got = s.snapshot(snap, 0).unwrap();
        assert_eq!(got.get_metadata().index, snap, "{when}");
        assert_eq!(got.get_metadata().term, term_of(snap), "{when}");
        assert_eq!(got.data, Bytes::from(format!("state@{snap}")), "{when}");
        if snap < last {
            check_range(s, snap + 1, last, term_of, when);
        }
    };

    // 29,999 is in the first file, which also holds 30,000: nothing is deleted.
    s.create_snapshot(29_999, None, format!("state@{}", 29_999))
        .unwrap();
    check_at(&s, 29_999, 3, 70_000, "S=29999");
    // 45,000: the first file (1..=30,000) is wholly below it and goes.
    s.create_snapshot(45_000, None, format!("state@{}", 45_000))
        .unwrap();
    check_at(&s, 45_000, 2, 70_000, "S=45000");
    s.close().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    check_at(&s, 45_000, 2, 70_000, "S=45000 reopened");
    // 60,001: the second file (30,001..=60,000) goes, the third (which holds 60,001) stays.
    s.create_snapshot(60_001, None, format!("state@{}", 60_001))
        .unwrap();
    check_at(&s, 60_001, 1, 70_000, "S=60001");
    // At last_index: the file holding it stays; the log is empty but continues after it.
    s.create_snapshot(70_000, None, format!("state@{}", 70_000))
        .unwrap();
    check_at(&s, 70_000, 1, 70_000, "S=70000");
    assert_eq!(s.entries(70_001, 70_001, NO_LIMIT, ctx()), Ok(vec![]));
    append_range(&s, 70_001, 70_010, term_of);
    s.sync().unwrap();
    check_at(&s, 70_000, 1, 70_010, "S=70000 appended");
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    check_at(&s, 70_000, 1, 70_010, "S=70000 reopened");
    // Out-of-range snapshots are refused and change nothing.
    assert_eq!(
        r(s.create_snapshot(60_000, None, "old")),
        Err(RaftError::Store(StorageError::SnapshotOutOfDate))
    );
    assert_eq!(r(s.create_snapshot(70_011, None, "future")), unavailable());
    check_at(&s, 70_000, 1, 70_010, "after refused snapshots");
    s.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// rejected appends
// ---------------------------------------------------------------------------------------------

fn bad_batches() -> Vec<(&'static str, Vec<Entry>)> {
    let e = |i: u64| entry(i, 9);
    vec![
        ("gap after last_index", vec![e(22)]),
        ("gap after last_index, batch", vec![e(25), e(26), e(27)]),
        ("non-contiguous batch", vec![e(21), e(23)]),
        (
            "non-contiguous at the end",
            vec![e(21), e(22), e(23), e(25)],
        ),
        ("overwrite then non-contiguous", vec![e(15), e(16), e(18)]),
        ("decreasing indexes", vec![e(21), e(20)]),
        ("decreasing overwrite", vec![e(18), e(17), e(16)]),
        ("repeated index", vec![e(21), e(21)]),
        ("start at the snapshot index", vec![e(10), e(11), e(12)]),
        ("start below first_index", vec![e(5), e(6)]),
        ("start at 1", vec![e(1)]),
        ("index 0", vec![e(0)]),
        ("far future", vec![e(u64::MAX)]),
    ]
}

/// Store with entries 1..=20 (term 1), hard state (3, 1, 15), snapshot at 10: first_index 11.
fn rejected_setup(s: &DiskStorage) {
    let batch: Vec<Entry> = (1..=20).map(|i| entry(i, 1)).collect();
    s.save(&hs(3, 1, 15), &batch, &Snapshot::default()).unwrap();
    s.create_snapshot(10, None, "ten").unwrap();
}

fn rejected_check(s: &DiskStorage, when: &str) {
    let want: Vec<Entry> = (11..=20).map(|i| entry(i, 1)).collect();
    assert_eq!(s.first_index(), Ok(11), "{when}");
    assert_eq!(s.last_index(), Ok(20), "{when}");
    assert_eq!(all_entries(s), want, "{when}");
    assert_eq!(s.term(10), Ok(1), "{when}");
    assert_eq!(s.term(21), unavailable(), "{when}");
    assert_eq!(
        s.initial_state().unwrap().hard_state,
        hs(3, 1, 15),
        "{when}"
    );
}

#[test]
fn save_rejects_gaps_holes_disorder_and_compacted_starts_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    rejected_setup(&s);
    for (what, batch) in bad_batches() {
        let res = s.save(&HardState::default(), &batch, &Snapshot::default());
        assert!(res.is_err(), "{what}: save must fail, got Ok");
        rejected_check(&s, what);
    }
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    rejected_check(&s, "reopened");
    // The store still accepts a good append afterwards.
    s.save(&HardState::default(), &[entry(21, 2)], &Snapshot::default())
        .unwrap();
    assert_eq!(s.last_index(), Ok(21));
    s.close().unwrap();
}

#[test]
fn save_rejected_append_does_not_write_its_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    rejected_setup(&s);
    for (what, batch) in bad_batches() {
        let res = s.save(&hs(9, 2, 20), &batch, &Snapshot::default());
        assert!(res.is_err(), "{what}: save must fail, got Ok");
        rejected_check(&s, what);
    }
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    rejected_check(&s, "reopened");
    s.close().unwrap();
}

#[test]
fn save_rejects_bad_batch_spanning_file_boundary_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    append_range(&s, 1, SLOTS_PER_FILE - 10, |_| 1);
    s.sync().unwrap();
    // Would overwrite from SLOTS_PER_FILE - 20 and cross into a second file, but is broken at its end.
    let mut batch: Vec<Entry> = (SLOTS_PER_FILE - 20..SLOTS_PER_FILE + 100)
        .map(|i| entry(i, 2))
        .collect();
    batch.push(entry(SLOTS_PER_FILE + 200, 2));
    assert!(s
        .save(&HardState::default(), &batch, &Snapshot::default())
        .is_err());
    let check = |s: &DiskStorage, when: &str| {
        assert_eq!(s.last_index(), Ok(SLOTS_PER_FILE - 10), "{when}");
        assert_eq!(s.num_log_files(), 1, "{when}");
        check_range(s, SLOTS_PER_FILE - 100, SLOTS_PER_FILE - 10, |_| 1, when);
    };
    check_live_then_reopened(s, dir.path(), Options::default(), check)
        .close()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// received snapshots
// ---------------------------------------------------------------------------------------------

#[test]
fn received_snapshot_replaces_the_log() {
    let conf = cs(&[1, 2, 3], &[4]);
    for (s_idx, what) in [(50u64, "ahead of the log"), (10, "inside the log")] {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStorage::open(dir.path()).unwrap();
        let batch: Vec<Entry> = (1..=20).map(|i| entry(i, 1)).collect();
        s.save(&hs(1, 1, 5), &batch, &Snapshot::default()).unwrap();
        s.set_conf_state(&cs(&[1], &[])).unwrap();
        s.save(
            &HardState::default(),
            &[],
            &snapshot(s_idx, 5, conf.clone(), b"snapdata"),
        )
        .unwrap();
        let check = |s: &DiskStorage, when: &str| {
            assert_eq!(s.first_index(), Ok(s_idx + 1), "{what} {when}");
            assert_eq!(s.last_index(), Ok(s_idx), "{what} {when}");
            assert_eq!(s.num_entries(), 0, "{what} {when}");
            assert_eq!(s.term(s_idx), Ok(5), "{what} {when}");
            assert_eq!(s.term(s_idx - 1), compacted(), "{what} {when}");
            assert_eq!(s.term(s_idx + 1), unavailable(), "{what} {when}");
            assert_eq!(s.entries(s_idx + 1, s_idx + 1, NO_LIMIT, ctx()), Ok(vec![]));
            assert_eq!(s.entries(5, s_idx + 1, NO_LIMIT, ctx()), compacted());
            let st = s.initial_state().unwrap();
            assert_eq!(st.conf_state, conf, "{what} {when}: conf state");
            // The stored commit (5), raised to the snapshot's index: its entries are committed.
            assert_eq!(st.hard_state, hs(1, 1, s_idx), "{what} {when}: hard state");
            let snap = s.snapshot(s_idx, 0).unwrap();
            assert_eq!(snap.get_metadata().index, s_idx, "{what} {when}");
            assert_eq!(snap.get_metadata().term, 5, "{what} {when}");
            assert_eq!(snap.get_metadata().get_conf_state(), &conf, "{what} {when}");
            assert_eq!(snap.data, Bytes::from_static(b"snapdata"), "{what} {when}");
            assert_eq!(
                s.snapshot(s_idx + 1, 0),
                Err(RaftError::Store(
                    StorageError::SnapshotTemporarilyUnavailable
                )),
                "{what} {when}"
            );
            assert_eq!(s.uint(MetaInfo::SnapshotIndex), s_idx, "{what} {when}");
            assert_eq!(s.uint(MetaInfo::SnapshotTerm), 5, "{what} {when}");
        };
        let s = check_live_then_reopened(s, dir.path(), Options::default(), check);
        // The log continues at S+1.
        s.save(
            &HardState::default(),
            &[entry(s_idx + 1, 5)],
            &Snapshot::default(),
        )
        .unwrap();
        assert_eq!(s.last_index(), Ok(s_idx + 1));
        // A received snapshot that is not newer is refused.
        assert_eq!(
            r(s.save(
                &HardState::default(),
                &[],
                &snapshot(s_idx, 5, conf.clone(), b"x")
            )),
            Err(RaftError::Store(StorageError::SnapshotOutOfDate)),
            "{what}"
        );
        assert_eq!(
            r(s.save(
                &HardState::default(),
                &[],
                &snapshot(s_idx - 1, 5, conf.clone(), b"x")
            )),
            Err(RaftError::Store(StorageError::SnapshotOutOfDate)),
            "{what}"
        );
        assert_eq!(
            s.snapshot(0, 0).unwrap().data,
            Bytes::from_static(b"snapdata")
        );
        s.close().unwrap();
    }
}

#[test]
fn save_applies_snapshot_first_then_entries_at_snapshot_index_plus_one() {
    let conf = cs(&[1, 2], &[]);
    // On a fresh store, and on one whose log overlaps the snapshot.
    for (pre, s_idx) in [(0u64, 100u64), (20, 10)] {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStorage::open(dir.path()).unwrap();
        if pre > 0 {
            let batch: Vec<Entry> = (1..=pre).map(|i| entry(i, 1)).collect();
            s.save(&hs(1, 0, 1), &batch, &Snapshot::default()).unwrap();
        }
        let ents: Vec<Entry> = (s_idx + 1..=s_idx + 5).map(|i| entry(i, 3)).collect();
        s.save(
            &hs(3, 2, s_idx + 2),
            &ents,
            &snapshot(s_idx, 3, conf.clone(), b"both"),
        )
        .unwrap();
        let check = |s: &DiskStorage, when: &str| {
            assert_eq!(s.first_index(), Ok(s_idx + 1), "pre={pre} {when}");
            assert_eq!(s.last_index(), Ok(s_idx + 5), "pre={pre} {when}");
            assert_eq!(all_entries(s), ents, "pre={pre} {when}");
            assert_eq!(s.term(s_idx), Ok(3), "pre={pre} {when}");
            let st = s.initial_state().unwrap();
            assert_eq!(st.hard_state, hs(3, 2, s_idx + 2), "pre={pre} {when}");
            assert_eq!(st.conf_state, conf, "pre={pre} {when}");
            assert_eq!(
                s.snapshot(s_idx, 0).unwrap().data,
                Bytes::from_static(b"both")
            );
        };
        check_live_then_reopened(s, dir.path(), Options::default(), check)
            .close()
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// hard state and conf state
// ---------------------------------------------------------------------------------------------

#[test]
fn default_hard_state_is_not_written_and_non_default_replaces_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.save(
        &hs(2, 1, 0),
        &[entry(1, 2), entry(2, 2)],
        &Snapshot::default(),
    )
    .unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 1, 0));
    // Default hard state with entries: the stored one stays.
    s.save(&HardState::default(), &[entry(3, 2)], &Snapshot::default())
        .unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 1, 0));
    // Default hard state alone: nothing happens.
    s.save(&HardState::default(), &[], &Snapshot::default())
        .unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 1, 0));
    s.close().unwrap();

    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 1, 0));
    assert_eq!(s.last_index(), Ok(3));
    // A non-default one replaces the stored one entirely (vote back to 0 included).
    s.save(&hs(3, 0, 3), &[], &Snapshot::default()).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(3, 0, 3));
    s.close().unwrap();

    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(3, 0, 3));
    s.save(&HardState::default(), &[], &Snapshot::default())
        .unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs(3, 0, 3));
    s.close().unwrap();
}

#[test]
fn set_conf_state_replaces_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    let a = cs(&[1, 2, 3], &[4]);
    s.set_conf_state(&a).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, a);
    s.close().unwrap();

    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, a);
    // A joint configuration with every field set.
    let mut b = cs(&[1, 2, 5], &[6]);
    b.voters_outgoing = vec![1, 2, 3];
    b.learners_next = vec![4];
    b.auto_leave = true;
    s.set_conf_state(&b).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, b);
    s.close().unwrap();

    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, b);
    assert_eq!(s.initial_state().unwrap().hard_state, HardState::default());
    s.close().unwrap();
}

#[test]
fn create_snapshot_records_given_conf_state_in_metadata_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    let current = cs(&[1, 2, 3], &[]);
    let given = cs(&[1, 2, 3, 4], &[5]);
    let batch: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
    s.save(&hs(1, 1, 10), &batch, &Snapshot::default()).unwrap();
    s.set_conf_state(&current).unwrap();
    s.create_snapshot(5, Some(&given), "five").unwrap();
    let check = |s: &DiskStorage, when: &str| {
        let snap = s.snapshot(5, 0).unwrap();
        assert_eq!(snap.get_metadata().get_conf_state(), &given, "{when}");
        assert_eq!(snap.data, Bytes::from_static(b"five"), "{when}");
        assert_eq!(s.initial_state().unwrap().conf_state, current, "{when}");
    };
    check_live_then_reopened(s, dir.path(), Options::default(), check)
        .close()
        .unwrap();
}

#[test]
fn create_snapshot_without_conf_state_records_current_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    let first = cs(&[1, 2, 3], &[]);
    let second = cs(&[2, 3], &[7]);
    let batch: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
    s.save(&hs(1, 1, 10), &batch, &Snapshot::default()).unwrap();
    s.set_conf_state(&first).unwrap();
    s.create_snapshot(4, None, "four").unwrap();
    assert_eq!(
        s.snapshot(4, 0).unwrap().get_metadata().get_conf_state(),
        &first
    );
    s.set_conf_state(&second).unwrap();
    s.create_snapshot(8, None, Bytes::from_static(b"eight"))
        .unwrap();
    let check = |s: &DiskStorage, when: &str| {
        let snap = s.snapshot(8, 0).unwrap();
        assert_eq!(snap.get_metadata().index, 8, "{when}");
        assert_eq!(snap.get_metadata().term, 1, "{when}");
        assert_eq!(snap.get_metadata().get_conf_state(), &second, "{when}");
        assert_eq!(snap.data, Bytes::from_static(b"eight"), "{when}");
        assert_eq!(s.initial_state().unwrap().conf_state, second, "{when}");
    };
    check_live_then_reopened(s, dir.path(), Options::default(), check)
        .close()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// truncate_entries_until
// ---------------------------------------------------------------------------------------------

#[test]
fn truncate_entries_until_empties_normal_entry_data_below_index_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    // Every entry has data (entry leaves index % 11 == 0 empty; force data there).
    let ents: Vec<Entry> = (1..=30)
        .map(|i| {
            let mut e = entry(i, 1 + i / 10);
            if e.data.is_empty() {
                e.data = Bytes::from_static(b"filled");
            }
            e
        })
        .collect();
    assert!(ents
        .iter()
        .any(|e| e.entry_type == EntryType::EntryConfChange && e.index < 16));
    assert!(ents
        .iter()
        .any(|e| e.entry_type == EntryType::EntryConfChangeV2 && e.index < 16));
    s.save(&hs(3, 1, 30), &ents, &Snapshot::default()).unwrap();
    s.truncate_entries_until(16).unwrap();

    let check = |s: &DiskStorage, until: u64, when: &str| {
        assert_eq!(s.first_index(), Ok(1), "{when}");
        assert_eq!(s.last_index(), Ok(30), "{when}");
        assert_eq!(s.num_entries(), 30, "{when}");
        let got = all_entries(s);
        assert_eq!(got.len(), ents.len(), "{when}");
        for (g, w) in got.iter().zip(&ents) {
            assert_eq!(g.index, w.index, "{when}");
            assert_eq!(g.term, w.term, "{when}: term of {}", w.index);
            assert_eq!(g.entry_type, w.entry_type, "{when}: type of {}", w.index);
            assert_eq!(s.term(w.index), Ok(w.term), "{when}");
            if w.index < until && w.entry_type == EntryType::EntryNormal {
                assert!(g.data.is_empty(), "{when}: entry {} kept its data", w.index);
            } else {
                assert_eq!(g, w, "{when}: entry {} changed", w.index);
            }
        }
    };
    check(&s, 16, "live");
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    check(&s, 16, "reopened");
    s.truncate_entries_until(25).unwrap();
    check(&s, 25, "live, second truncate");
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    check(&s, 25, "reopened, second truncate");
    s.close().unwrap();
}

/// `DiskStorage` as a [`truncations::Log`].
struct TruncatedDisk {
    dir: tempfile::TempDir,
    s: Option<DiskStorage>,
    /// Kill images taken so far (the storage opened on the newest).
    images: Vec<tempfile::TempDir>,
}

impl TruncatedDisk {
    fn path(&self) -> &Path {
        self.images.last().unwrap_or(&self.dir).path()
    }
}

impl TruncatedDisk {
    fn s(&self) -> &DiskStorage {
        self.s.as_ref().expect("open")
    }
}

impl truncations::Log for TruncatedDisk {
    fn append(&mut self, entries: &[Entry]) {
        self.s()
            .save(&HardState::default(), entries, &Snapshot::default())
            .unwrap();
    }
    fn truncate_until(&mut self, index: u64) {
        self.s().truncate_entries_until(index).unwrap();
    }
    fn compact(&mut self, index: u64) {
        self.s().create_snapshot(index, None, "snap").unwrap();
    }
    fn reopen(&mut self) {
        self.s.take().expect("open").close().unwrap();
        self.s = Some(DiskStorage::open(self.path()).unwrap());
    }
    fn crash(&mut self) {
        let image = tempfile::tempdir().unwrap();
        roots::kill_image(self.path(), image.path());
        self.s.take().expect("open").close().unwrap();
        self.images.push(image);
        self.s = Some(DiskStorage::open(self.path()).unwrap());
    }
    fn read(&self) -> (u64, Vec<Entry>) {
        (self.s().first_index().unwrap(), all_entries(self.s()))
    }
}

/// Truncations, overwrites (below an earlier truncation too), compactions and reopens in
/// random order, against a model: an entry written again after a truncation keeps its data
/// until a truncation past it. (A truncation does not read again what an earlier one cleared,
/// unless something was written there since.)
#[test]
fn truncate_entries_until_follows_a_model_through_overwrites_and_reopens() {
    for seed in 0..truncations::seeds(12) {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStorage::open(dir.path()).unwrap();
        let mut log = TruncatedDisk {
            dir,
            s: Some(s),
            images: Vec::new(),
        };
        truncations::run(&mut log, seed, 120, 24).unwrap();
    }
}

#[test]
fn truncate_entries_until_is_not_mistaken_for_tail_damage_on_reopen() {
    // No hard state: a reopen that cuts the log at the first truncated slot would not be caught
    // by the commit-index check, so count the entries and open in strict mode too.
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    let ents: Vec<Entry> = (1..=30).map(|i| entry(i, 1)).collect();
    s.save(&HardState::default(), &ents, &Snapshot::default())
        .unwrap();
    s.truncate_entries_until(16).unwrap();
    s.close().unwrap();

    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(
        s.last_index(),
        Ok(30),
        "entries lost at reopen after truncate_entries_until"
    );
    assert_eq!(s.entries(16, 31, NO_LIMIT, ctx()), Ok(ents[15..].to_vec()));
    s.close().unwrap();
    let strict = Options {
        recovery_mode: raftwal::RecoveryMode::AbsoluteConsistency,
        ..Default::default()
    };
    let s = DiskStorage::open_with(dir.path(), strict);
    assert!(
        s.is_ok(),
        "strict open after truncate_entries_until: {:?}",
        s.err()
    );
    s.unwrap().close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// meta integers
// ---------------------------------------------------------------------------------------------

#[test]
fn meta_uints_and_checkpoint_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::RaftId), 0);
    assert_eq!(s.uint(MetaInfo::GroupId), 0);
    assert_eq!(s.uint(MetaInfo::CheckpointIndex), 0);
    assert_eq!(s.checkpoint().unwrap(), 0);
    s.set_uint(MetaInfo::RaftId, 7);
    s.set_uint(MetaInfo::GroupId, 9);
    s.set_uint(MetaInfo::CheckpointIndex, 42);
    let check = |s: &DiskStorage, id: u64, group: u64, cp: u64, when: &str| {
        assert_eq!(s.uint(MetaInfo::RaftId), id, "{when}");
        assert_eq!(s.uint(MetaInfo::GroupId), group, "{when}");
        assert_eq!(s.uint(MetaInfo::CheckpointIndex), cp, "{when}");
        assert_eq!(s.checkpoint().unwrap(), cp, "{when}");
    };
    check(&s, 7, 9, 42, "live");
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    check(&s, 7, 9, 42, "after close");

    // Durable through drop too, and through sync().
    s.set_uint(MetaInfo::CheckpointIndex, 43);
    s.set_uint(MetaInfo::RaftId, u64::MAX);
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    check(&s, u64::MAX, 9, 43, "after drop");
    s.set_uint(MetaInfo::GroupId, 10);
    s.sync().unwrap();
    check(&s, u64::MAX, 10, 43, "after sync");
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    check(&s, u64::MAX, 10, 43, "after sync + close");
    // Unrelated writes do not disturb them.
    s.save(&hs(1, 1, 1), &[entry(1, 1)], &Snapshot::default())
        .unwrap();
    s.set_conf_state(&cs(&[1], &[])).unwrap();
    s.create_snapshot(1, None, "one").unwrap();
    check(&s, u64::MAX, 10, 43, "after writes");
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    check(&s, u64::MAX, 10, 43, "after writes, reopened");
    s.close().unwrap();
}

#[test]
fn snapshot_uints_reflect_the_current_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 0);
    assert_eq!(s.uint(MetaInfo::SnapshotTerm), 0);
    let batch: Vec<Entry> = (1..=10).map(|i| entry(i, i / 3 + 1)).collect();
    s.save(&hs(4, 1, 10), &batch, &Snapshot::default()).unwrap();
    s.create_snapshot(7, None, "seven").unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 7);
    assert_eq!(s.uint(MetaInfo::SnapshotTerm), 3);
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 7);
    assert_eq!(s.uint(MetaInfo::SnapshotTerm), 3);
    // A received snapshot.
    s.save(
        &HardState::default(),
        &[],
        &snapshot(50, 6, cs(&[1], &[]), b"fifty"),
    )
    .unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 50);
    assert_eq!(s.uint(MetaInfo::SnapshotTerm), 6);
    s.close().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 50);
    assert_eq!(s.uint(MetaInfo::SnapshotTerm), 6);
    s.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// directory lock
// ---------------------------------------------------------------------------------------------

#[test]
fn second_open_of_same_directory_fails_until_first_is_closed_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let a = DiskStorage::open(dir.path()).unwrap();
    a.save(&hs(1, 1, 1), &[entry(1, 1)], &Snapshot::default())
        .unwrap();

    let second = DiskStorage::open(dir.path());
    assert!(
        second.is_err(),
        "second open while the first is open must fail"
    );
    assert!(
        matches!(second, Err(Error::Locked { .. })),
        "expected Error::Locked, got {:?}",
        second.err()
    );
    assert!(DiskStorage::open_with(dir.path(), fast()).is_err());
    // The failed opens did not disturb the first store.
    assert_eq!(a.last_index(), Ok(1));
    a.save(&HardState::default(), &[entry(2, 1)], &Snapshot::default())
        .unwrap();
    a.close().unwrap();

    let b = DiskStorage::open(dir.path()).expect("open after close");
    assert_eq!(b.last_index(), Ok(2));
    assert!(DiskStorage::open(dir.path()).is_err());
    drop(b);

    let c = DiskStorage::open(dir.path()).expect("open after drop");
    assert_eq!(c.last_index(), Ok(2));
    c.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// unsynced writes
// ---------------------------------------------------------------------------------------------

#[test]
fn unsynced_writes_are_readable_at_once_and_survive_close_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    let batch: Vec<Entry> = (1..=100).map(|i| entry(i, 1)).collect();
    s.save(&hs(1, 1, 50), &batch, &Snapshot::default()).unwrap();
    // Readable without sync().
    assert_eq!(s.last_index(), Ok(100));
    assert_eq!(all_entries(&s), batch);
    assert_eq!(s.initial_state().unwrap().hard_state, hs(1, 1, 50));
    s.set_conf_state(&cs(&[1, 2], &[])).unwrap();
    s.create_snapshot(40, None, "forty").unwrap();
    assert_eq!(s.first_index(), Ok(41));
    s.close().unwrap();

    let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
    assert_eq!(s.first_index(), Ok(41));
    assert_eq!(s.last_index(), Ok(100));
    assert_eq!(all_entries(&s), batch[40..].to_vec());
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, hs(1, 1, 50));
    assert_eq!(st.conf_state, cs(&[1, 2], &[]));
    assert_eq!(
        s.snapshot(40, 0).unwrap().data,
        Bytes::from_static(b"forty")
    );

    // Dropped without close(): drop does what close does.
    let more: Vec<Entry> = (101..=150).map(|i| entry(i, 2)).collect();
    s.save(&hs(2, 1, 120), &more, &Snapshot::default()).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_index(), Ok(150));
    check_range(&s, 101, 150, |_| 2, "after drop");
    assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 1, 120));
    s.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// thread safety
// ---------------------------------------------------------------------------------------------

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DiskStorage>();
};

#[test]
fn disk_storage_is_shared_between_threads() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const N: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(DiskStorage::open_with(dir.path(), fast()).unwrap());
    // Readers read whatever the log holds while the writer appends; the writer waits for two
    // more reads before each save, so reads and writes interleave whatever the scheduling.
    let reads = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, reads, done) = (Arc::clone(&s), Arc::clone(&reads), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut while_writing = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let last = s.last_index().unwrap();
                    if last > 0 {
                        check_range(&s, 1, last, |_| 1, "reader thread");
                        assert_eq!(s.term(last), Ok(1), "reader thread: term({last})");
                    }
                    reads.fetch_add(1, Ordering::AcqRel);
                    if finished {
                        return while_writing;
                    }
                    while_writing += 1;
                }
            })
        })
        .collect();
    let writer = {
        let (s, reads) = (Arc::clone(&s), Arc::clone(&reads));
        std::thread::spawn(move || {
            for i in 1..=N {
                let want = 2 * i;
                while reads.load(Ordering::Acquire) < want {
                    std::thread::yield_now();
                }
                s.save(&HardState::default(), &[entry(i, 1)], &Snapshot::default())
                    .unwrap();
            }
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Release);
    let overlapping: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        overlapping >= 2 * N,
        "only {overlapping} reads ran while the writer wrote"
    );
    check_range(&s, 1, N, |_| 1, "after the writer");
    let s = Arc::try_unwrap(s).expect("no other owners left");
    s.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// directory contents
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_files_in_directory_are_ignored_by_open() {
    let dir = tempfile::tempdir().unwrap();
    let unknown: [(&str, &[u8]); 3] = [
        ("notes.txt", b"operator notes"),
        ("foo.wal.bak", b"not a log file"),
        ("README", b""),
    ];
    // Before the first open.
    for (name, body) in unknown {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    std::fs::create_dir(dir.path().join("misc")).unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.first_index(), Ok(1));
    assert_eq!(s.last_index(), Ok(0));
    let batch: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
    s.save(&hs(1, 1, 10), &batch, &Snapshot::default()).unwrap();
    s.close().unwrap();

    // Added to an existing store.
    std::fs::write(dir.path().join("later.txt"), b"added later").unwrap();
    std::fs::write(dir.path().join("00000.wal.bak"), vec![0xAB; 4096]).unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(all_entries(&s), batch);
    assert_eq!(s.initial_state().unwrap().hard_state, hs(1, 1, 10));
    s.close().unwrap();

    // Left alone.
    for (name, body) in unknown {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            body,
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("later.txt")).unwrap(),
        b"added later"
    );
    assert!(dir.path().join("misc").is_dir());
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains("wal.meta"), "{names:?}");
    assert!(names.contains("00000.wal.bak"), "{names:?}");
}

#[test]
fn open_in_missing_parent_directory_creates_it_or_fails_cleanly() {
    // `open` creates or recovers, and never panics (docs/DESIGN.md §4, Errors).
    let base = tempfile::tempdir().unwrap();
    let path = base.path().join("a").join("b").join("group-1");
    match DiskStorage::open(&path) {
        Ok(s) => {
            assert!(path.is_dir());
            assert!(path.join("wal.meta").exists());
            s.save(&hs(1, 1, 1), &[entry(1, 1)], &Snapshot::default())
                .unwrap();
            s.close().unwrap();
            let s = DiskStorage::open(&path).unwrap();
            assert_eq!(s.last_index(), Ok(1));
            s.close().unwrap();
        }
        Err(e) => {
            // A clean error: nothing half-created that a later open would trip over.
            assert!(!path.join("wal.meta").exists(), "failed open left {e}");
        }
    }
}

/// Snapshots written at the same index from two threads at once (as an application's
/// background snapshot and a backup pull can): whichever wins, the directory reopens with a
/// snapshot whose data is one of the two, never a file the other writer removed or replaced.
#[test]
fn concurrent_create_snapshot_at_the_same_index_leaves_a_readable_snapshot() {
    for round in 0..12u8 {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(DiskStorage::open_with(dir.path(), fast()).unwrap());
        append_range(&s, 1, 101, term_of);
        let data: Vec<Vec<u8>> = (0..2u8)
            .map(|t| vec![round.wrapping_mul(31).wrapping_add(t); 256 << 10])
            .collect();
        let threads: Vec<_> = data
            .iter()
            .cloned()
            .map(|d| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || s.create_snapshot_from(50, None, &d[..]))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            results.iter().any(|r| r.is_ok()),
            "round {round}: {results:?}"
        );
        drop(s);
        let s = DiskStorage::open_with(dir.path(), fast()).unwrap();
        let snap = s.snapshot(0, 0).unwrap();
        assert_eq!(snap.get_metadata().index, 50, "round {round}");
        assert!(
            data.iter().any(|d| snap.data[..] == d[..]),
            "round {round}: the snapshot's data is neither writer's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// the spare: a compacted file reused by the next rotation (synced stores)
// ---------------------------------------------------------------------------------------------

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// Opens `dir` both ways and checks it holds `lo..=hi` (and nothing after).
fn check_reopened(dir: &Path, lo: u64, hi: u64, when: &str) {
    for mode in [
        raftwal::RecoveryMode::TolerateTailCorruption,
        raftwal::RecoveryMode::AbsoluteConsistency,
    ] {
        let opts = Options {
            recovery_mode: mode,
            ..Default::default()
        };
        let s = DiskStorage::open_with(dir, opts).unwrap();
        assert_eq!(s.first_index(), Ok(lo), "{when}, {mode:?}");
        assert_eq!(s.last_index(), Ok(hi), "{when}, {mode:?}");
        check_range(&s, lo, hi, term_of, &format!("{when}, {mode:?}"));
        s.close().unwrap();
    }
}

#[test]
fn a_compacted_file_becomes_the_spare_and_the_next_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let spare = dir.path().join(SPARE_FILE);
    let s = DiskStorage::open(dir.path()).unwrap();
    append_range(&s, 1, 70_000, term_of);
    let first = inode(&dir.path().join("00001.wal"));
    s.create_snapshot(30_001, None, "s").unwrap();
    assert!(!dir.path().join("00001.wal").exists());
    assert_eq!(inode(&spare), first, "file 1 was not kept as the spare");
    assert_eq!(wal_files(dir.path()), 2);
    check_range(&s, 30_002, 70_000, term_of, "with a spare");

    // The next new file (00004.wal, from 90,001) is the spare, renamed and emptied: stale slots
    // and payloads of its first life never show.
    append_range(&s, 70_001, 95_000, term_of);
    assert!(!spare.exists(), "the spare was not used");
    assert_eq!(inode(&dir.path().join("00004.wal")), first);
    check_range(&s, 30_002, 95_000, term_of, "live");
    s.close().unwrap();
    check_reopened(dir.path(), 30_002, 95_000, "reopened");

    // Also when the spare is reused past the end of its old payloads (the file grows).
    let s = DiskStorage::open(dir.path()).unwrap();
    s.create_snapshot(60_001, None, "s2").unwrap();
    assert!(spare.exists());
    let big: Vec<Entry> = (95_001..=95_010)
        .map(|i| {
            let mut e = entry(i, term_of(i));
            e.data = Bytes::from(vec![i as u8; 2 << 20]);
            e
        })
        .collect();
    s.save(&HardState::default(), &big, &Snapshot::default())
        .unwrap();
    append_range(&s, 95_011, 120_001, term_of);
    assert!(!spare.exists(), "the spare was not used");
    let got = s.entries(95_001, 95_011, NO_LIMIT, ctx()).unwrap();
    assert_eq!(got, big);
    s.close().unwrap();
}

#[test]
fn a_file_a_reader_still_holds_is_removed_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let spare = dir.path().join(SPARE_FILE);
    let s = DiskStorage::open(dir.path()).unwrap();
    append_range(&s, 1, 40_000, term_of);
    // Views into file 1 (zero-copy: they map its pages).
    let held = s.entries(100, 200, NO_LIMIT, ctx()).unwrap();
    s.create_snapshot(30_001, None, "s").unwrap();
    assert!(!spare.exists(), "a file with live views became the spare");
    assert!(!dir.path().join("00001.wal").exists());
    append_range(&s, 40_001, 95_000, term_of);
    let want: Vec<Entry> = (100..200).map(|i| entry(i, term_of(i))).collect();
    assert_eq!(held, want, "a held entry changed");
    // Once nothing holds file 2, it becomes the spare.
    drop(held);
    s.create_snapshot(60_001, None, "s2").unwrap();
    assert!(spare.exists());
    s.close().unwrap();
}

#[test]
fn unsynced_or_opted_out_stores_delete_compacted_files_and_a_leftover_spare() {
    for (opts, what) in [
        (fast(), "sync_writes: false"),
        (
            Options {
                recycle_log_files: false,
                ..Default::default()
            },
            "recycle_log_files: false",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE_FILE);
        std::fs::write(&spare, vec![7u8; 2 << 20]).unwrap();
        let s = DiskStorage::open_with(dir.path(), opts).unwrap();
        assert!(!spare.exists(), "{what}: a leftover spare stayed");
        append_range(&s, 1, 40_000, term_of);
        s.create_snapshot(30_001, None, "s").unwrap();
        assert!(!spare.exists(), "{what}: a spare was kept");
        assert_eq!(wal_files(dir.path()), 1, "{what}");
        s.close().unwrap();
    }
}

#[test]
fn a_leftover_spare_is_reused_whatever_it_holds_and_a_short_one_is_dropped() {
    // A spare of stale slot-like garbage (every byte 0xA5), and one shorter than a slot area.
    for (len, reused) in [(3 << 20, true), (4096, false)] {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE_FILE);
        std::fs::write(&spare, vec![0xA5u8; len]).unwrap();
        let garbage = inode(&spare);
        let s = DiskStorage::open(dir.path()).unwrap();
        append_range(&s, 1, 35_000, term_of);
        assert!(!spare.exists(), "len {len}: the spare is still there");
        // The first file the store makes is the spare (a short one is removed instead, and its
        // inode number may well be given to the new file, so only reuse is checked).
        if reused {
            assert_eq!(inode(&dir.path().join("00001.wal")), garbage, "len {len}");
        }
        check_range(&s, 1, 35_000, term_of, "live");
        s.close().unwrap();
        check_reopened(dir.path(), 1, 35_000, &format!("len {len}, reopened"));
    }
}

#[test]
fn a_crash_while_the_spare_takes_its_new_name_leaves_an_empty_tail() {
    // What a crash between the spare's rename and its new header can leave: the next file's
    // name on a file whose first MiB is zeroes (flushed before the rename) and whose payload
    // area holds its first life's bytes. Open must read it as an empty tail, in both modes.
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    append_range(&s, 1, 65_000, term_of);
    s.create_snapshot(30_001, None, "s").unwrap();
    s.close().unwrap();
    let spare = dir.path().join(SPARE_FILE);
    let mut bytes = std::fs::read(&spare).unwrap();
    bytes[..PAYLOADS_AT as usize].fill(0);
    std::fs::write(dir.path().join("00004.wal"), &bytes).unwrap();
    std::fs::remove_file(&spare).unwrap();
    check_reopened(dir.path(), 30_002, 65_000, "after the crash");
    let s = DiskStorage::open(dir.path()).unwrap();
    append_range(&s, 65_001, 95_000, term_of);
    check_range(&s, 30_002, 95_000, term_of, "carried on");
    s.close().unwrap();
}
