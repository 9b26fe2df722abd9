//! The log's index lives in the map, not on the heap: with 10 M entries in the log the heap stays
//! under 32 MiB (docs/DESIGN.md §5). A counting global allocator tracks live heap bytes and their
//! peak while the log is written, reopened and read.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Options};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{LIVE, PEAK};

const ENTRIES: u64 = 10_000_000;
const BATCH: u64 = 20_000;
const LIMIT: usize = 32 << 20;

fn batch(first: u64, payload: &Bytes) -> Vec<Entry> {
    (first..first + BATCH)
        .map(|i| {
            let mut e = Entry::default();
            e.index = i;
            e.term = 1 + i / 1_000_000;
            // Shares one allocation: the test measures the engine, not the caller's payloads.
            e.data = payload.clone();
            e
        })
        .collect()
}

#[test]
fn heap_stays_under_32_mib_with_10m_entries_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let payload = Bytes::from(vec![0x5a; 16]);
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    {
        let s = DiskStorage::open_with(dir.path(), opts.clone()).unwrap();
        let mut next = 1;
        while next <= ENTRIES {
            let es = batch(next, &payload);
            s.save(&HardState::default(), &es, &Snapshot::default())
                .unwrap();
            next += BATCH;
        }
        assert_eq!(s.last_index().unwrap(), ENTRIES);
        s.close().unwrap();
    }
    let s = DiskStorage::open_with(dir.path(), opts).unwrap();
    assert_eq!(s.last_index().unwrap(), ENTRIES);
    assert_eq!(s.num_log_files(), ENTRIES.div_ceil(30_000) as usize);
    let mut i = 1;
    while i <= ENTRIES {
        let hi = (i + 64).min(ENTRIES + 1);
        let es = s
            .entries(i, hi, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(es[0].index, i);
        assert_eq!(s.term(i).unwrap(), 1 + i / 1_000_000);
        i += 99_991;
    }
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    drop(s);
    println!(
        "heap held with the log open: {held} bytes; peak while writing and reading: {peak} bytes"
    );
    assert!(held < LIMIT, "heap held {held} bytes with 10M entries open");
    assert!(peak < LIMIT, "heap peaked at {peak} bytes");
}
