//! Entries are handed out as zero-copy views of the log files' maps. A view must never change
//! afterwards: not when its entry is overwritten by a conflicting append, not when the file
//! grows (remap), not when its file is removed by a snapshot, not after the store is closed.

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Options};

fn entry(index: u64, term: u64, fill: u8, len: usize) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = Bytes::from(vec![fill; len]);
    if index % 3 == 0 {
        e.context = Bytes::from(vec![fill ^ 0xff; 7]);
    }
    e
}

fn read(s: &DiskStorage, lo: u64, hi: u64) -> Vec<Entry> {
    s.entries(lo, hi, None, GetEntriesContext::empty(false))
        .expect("entries")
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
    let first: Vec<Entry> = (1..=100).map(|i| entry(i, 1, 0xAA, 300)).collect();
    s.save(&HardState::default(), &first, &Snapshot::default())
        .unwrap();
    let held = read(&s, 1, 101);
    // A conflicting append from index 10 on, with other bytes of other lengths.
    let second: Vec<Entry> = (10..=200).map(|i| entry(i, 2, 0x55, 100)).collect();
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
    let first: Vec<Entry> = (1..=50).map(|i| entry(i, 1, i as u8, 4096)).collect();
    s.save(&HardState::default(), &first, &Snapshot::default())
        .unwrap();
    let held = read(&s, 1, 51);
    // Grow the first file well past its initial reservation (remaps), then rotate past it.
    let mut next = 51;
    while next <= 30_100 {
        let batch: Vec<Entry> = (next..next + 1000).map(|i| entry(i, 1, 7, 600)).collect();
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
    let first: Vec<Entry> = (1..=20).map(|i| entry(i, 1, 0x11, 128)).collect();
    s.save(&HardState::default(), &first, &Snapshot::default())
        .unwrap();
    let held = read(&s, 1, 21);
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 50;
    snap.mut_metadata().term = 3;
    snap.data = Bytes::from_static(b"leader state");
    let after: Vec<Entry> = (51..=70).map(|i| entry(i, 3, 0x22, 128)).collect();
    s.save(&HardState::default(), &after, &snap).unwrap();
    assert_eq!(held, first);
    assert_eq!(read(&s, 51, 71), after);
}
