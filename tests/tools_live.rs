//! The read tools beside a live `DiskStorage` (README: the tools run beside a live node): what
//! the store changes under an `Inspector` that read its directory before is never reported as
//! damage. A snapshot the store replaced since (and whose file it removed) is read from the one
//! the meta page names now; a log file it recycled in place (a snapshot made it obsolete, the
//! next rotation reused it) makes `changed_since_open` true, and a new read checks clean.

use raft::prelude::{Entry, HardState, Snapshot};
use raftwal::inspect::Inspector;
use raftwal::DiskStorage;

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    (e.index, e.term) = (index, term);
    e.data = format!("entry {index} of term {term}").into_bytes().into();
    e
}

fn data(index: u64) -> Vec<u8> {
    (0..1000).map(|i| (index as usize * 31 + i) as u8).collect()
}

fn store_of(dir: &std::path::Path, last: u64) -> DiskStorage {
    let store = DiskStorage::open(dir).unwrap();
    let es: Vec<Entry> = (1..=last).map(|i| entry(i, 1)).collect();
    store
        .save(&HardState::default(), &es, &Snapshot::default())
        .unwrap();
    store
}

/// The store replaces its snapshot (50 by 60) after the inspector read its directory: the
/// snapshot at 60 is served and checked, not a missing file (both once were, exit 1 from
/// `verify` and `snapshot save` beside a node taking snapshots: found by a review helper).
#[test]
fn a_snapshot_the_store_replaced_is_read_from_its_meta_page_now() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(dir.path(), 100);
    store.create_snapshot(50, None, data(50)).unwrap();
    let read = Inspector::open(dir.path()).unwrap();
    assert!(!read.changed_since_open());
    store.create_snapshot(60, None, data(60)).unwrap();
    assert!(read.changed_since_open());
    let mut reader = read.snapshot_reader().unwrap();
    assert_eq!(reader.metadata().index, 60);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut got).unwrap();
    assert_eq!(got, data(60));
    let report = read.verify(&mut |_| {}).unwrap();
    assert_eq!(report.snapshot_bytes_checked, 1000);
}

/// A log file the inspector read is recycled by the store (a snapshot made it obsolete, the
/// next rotation took it as its spare and wrote new entries into it): the inspector's reads
/// through its old descriptor may no longer match the slots it copied, which it once reported
/// as a damaged `00001.wal`. `changed_since_open` says the store moved on, and a new read of the
/// directory checks clean; `raftwal verify DIR` reads again so.
#[test]
fn a_log_file_the_store_recycled_under_a_read_is_a_change_not_damage() {
    const N: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    // Default options: log files are recycled.
    let store = store_of(dir.path(), N + 100);
    assert_eq!(store.num_log_files(), 2);
    let read = Inspector::open(dir.path()).unwrap();
    store.create_snapshot(N + 50, None, Vec::new()).unwrap();
    let es: Vec<Entry> = (N + 101..=2 * N + 10).map(|i| entry(i, 2)).collect();
    store
        .save(&HardState::default(), &es, &Snapshot::default())
        .unwrap();
    assert!(dir.path().join("00003.wal").exists(), "the next file");
    assert!(read.changed_since_open());
    if let Err(e) = read.verify(&mut |_| {}) {
        assert!(e.to_string().contains("00001.wal"), "{e}");
    }
    let again = Inspector::open(dir.path()).unwrap();
    again.verify(&mut |_| {}).unwrap();
    assert!(!again.changed_since_open());
}
