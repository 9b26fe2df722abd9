//! Entries are handed out as zero-copy views of the log files' maps. A view must never change
//! afterwards: not when its entry is overwritten by a conflicting append, not when the file
//! grows, not when its file is removed by a snapshot or reused as the spare, not after the store
//! is closed. (Growth past a map's reserved address space, which maps the file anew, is tested
//! in `src/sys/map.rs`: a log file would need more than 1 GiB of payloads to reach it here.) The
//! read-only tools, which run beside a live node, hand out copies that never change either.

use bytes::Bytes;
use raft::prelude::*;
use raft::Storage;
use raftwal::{DiskStorage, Options};

#[path = "common/entries.rs"]
mod entries;

use entries::{ctx, filled_entry_with_context};

fn read(s: &DiskStorage, lo: u64, hi: u64) -> Vec<Entry> {
    s.entries(lo, hi, None, ctx()).expect("entries")
}

fn unsynced() -> Options {
    Options {
        sync_writes: false,
        ..Default::default()
    }
}

#[test]
fn views_survive_overwrite_of_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), unsynced()).unwrap();
    let first: Vec<Entry> = (1..=100)
        .map(|i| filled_entry_with_context(i, 1, 0xAA, 300))
        .collect();
    s.save(&HardState::default(), &first, &Snapshot::default())
        .unwrap();
    let held = read(&s, 1, 101);
    // A conflicting append from index 10 on, with other bytes of other lengths.
    let second: Vec<Entry> = (10..=200)
        .map(|i| filled_entry_with_context(i, 2, 0x55, 100))
        .collect();
    s.save(&HardState::default(), &second, &Snapshot::default())
        .unwrap();
    assert_eq!(held, first, "views changed under an overwrite");
    assert_eq!(read(&s, 10, 201), second);
    assert_eq!(read(&s, 1, 10), first[..9].to_vec());
}

#[test]
fn views_survive_file_growth_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), unsynced()).unwrap();
    let first: Vec<Entry> = (1..=50)
        .map(|i| filled_entry_with_context(i, 1, i as u8, 4096))
        .collect();
    s.save(&HardState::default(), &first, &Snapshot::default())
        .unwrap();
    let held = read(&s, 1, 51);
    // Grow the first file well past its initial allocation (within its mapping's reserved
    // address space), then rotate past it.
    let mut next = 51;
    while next <= 30_100 {
        let batch: Vec<Entry> = (next..next + 1000)
            .map(|i| filled_entry_with_context(i, 1, 7, 600))
            .collect();
        s.save(&HardState::default(), &batch, &Snapshot::default())
            .unwrap();
        next += 1000;
    }
    assert!(s.num_log_files() >= 2);
    // Remove the first file with a snapshot past it.
    s.create_snapshot(30_050, None, Bytes::from_static(b"state"))
        .unwrap();
    assert_eq!(s.num_log_files(), 1);
    assert_eq!(held, first, "views changed under growth or file removal");
    drop(s);
    assert_eq!(held, first, "views changed after the store was dropped");
}

#[test]
fn views_survive_a_received_snapshot_replacing_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), unsynced()).unwrap();
    let first: Vec<Entry> = (1..=20)
        .map(|i| filled_entry_with_context(i, 1, 0x11, 128))
        .collect();
    s.save(&HardState::default(), &first, &Snapshot::default())
        .unwrap();
    let held = read(&s, 1, 21);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 50;
    snap.mut_metadata().term = 3;
    snap.data = Bytes::from_static(b"leader state");
    let after: Vec<Entry> = (51..=70)
        .map(|i| filled_entry_with_context(i, 3, 0x22, 128))
        .collect();
    s.save(&HardState::default(), &after, &snap).unwrap();
    assert_eq!(held, first);
    assert_eq!(read(&s, 51, 71), after);
}

/// Entries read by the inspector (the read-only tools) while a node keeps writing: the node
/// snapshots, its compacted first file becomes the spare, and the next rotation reuses it
/// (zeroing its slots, writing new payloads over the old). What the inspector handed out
/// before must not change: the tools copy what they read, they never map a live node's files.
#[test]
fn inspector_reads_beside_a_live_node_never_change() {
    let dir = tempfile::tempdir().unwrap();
    // Synced writes: compacted files are recycled.
    let s = DiskStorage::open(dir.path()).unwrap();
    let write = |lo: u64, hi: u64, fill: u8| {
        let mut i = lo;
        while i <= hi {
            let end = (i + 4_999).min(hi);
            let batch: Vec<Entry> = (i..=end)
                .map(|k| filled_entry_with_context(k, 1, fill, 64))
                .collect();
            s.save(&HardState::default(), &batch, &Snapshot::default())
                .unwrap();
            i = end + 1;
        }
    };
    write(1, 30_100, 0x3C);
    let inspector = raftwal::inspect::Inspector::open(dir.path()).unwrap();
    let held = inspector.entries(1, 101).unwrap();
    let want: Vec<Entry> = (1..=100)
        .map(|i| filled_entry_with_context(i, 1, 0x3C, 64))
        .collect();
    assert_eq!(held, want);
    // 00001.wal leaves the log and becomes the spare, then the rotation into file 3 reuses it.
    s.create_snapshot(30_050, None, Bytes::from_static(b"state"))
        .unwrap();
    assert!(dir.path().join("spare.wal").exists(), "no spare was kept");
    write(30_101, 60_100, 0xC3);
    assert!(
        !dir.path().join("spare.wal").exists(),
        "the spare was not reused"
    );
    let changed = held
        .iter()
        .zip(&want)
        .find(|(h, w)| h != w)
        .map(|(h, _)| h.index);
    assert_eq!(
        changed, None,
        "entries the inspector handed out changed under it (first: index)"
    );
    drop(inspector);
    assert!(held == want);
}
