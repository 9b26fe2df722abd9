//! Readers calling `entries`, `term`, `first_index` and `last_index` while a writer appends,
//! overwrites suffixes with a higher term, takes snapshots and installs received ones. Every
//! payload is a function of (index, term), so a reader can tell an altered entry from a
//! legitimately replaced one: no reader may ever see an entry whose bytes do not match its own
//! index and term, nor a panic. Errors a reader may legitimately meet (the range moved under it:
//! Compacted, Unavailable) are counted, not failures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use raft::prelude::*;
use raft::{Storage, StorageError};
use raftwal::{DiskStorage, Options};

#[path = "common/entries.rs"]
mod entries;

use entries::{ctx, entry_with_data};

/// The data of entry `index` of term `term` (what `check` verifies): 16..=315 bytes derived
/// from both. Entries at multiples of 5 also carry the context `ctx-<index>-<term>`.
fn payload(index: u64, term: u64) -> Bytes {
    let len = 16 + (index * 7 + term) % 300;
    let mut v = Vec::with_capacity(len as usize);
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v.into()
}

fn check(e: &Entry) {
    assert_eq!(
        e.data,
        payload(e.index, e.term),
        "altered data at index {}",
        e.index
    );
    if e.index.is_multiple_of(5) {
        assert_eq!(
            e.context,
            Bytes::from(format!("ctx-{}-{}", e.index, e.term))
        );
    } else {
        assert!(e.context.is_empty());
    }
}

fn tolerated(e: &raft::Error) -> bool {
    matches!(
        e,
        raft::Error::Store(StorageError::Compacted) | raft::Error::Store(StorageError::Unavailable)
    )
}

#[test]
fn readers_never_see_altered_entries_while_a_writer_appends_overwrites_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let store = Arc::new(DiskStorage::open_with(dir.path(), opts).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let tolerated_errors = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (store, stop, reads, tol) = (
                store.clone(),
                stop.clone(),
                reads.clone(),
                tolerated_errors.clone(),
            );
            thread::spawn(move || {
                let mut x = 0x1234_5678u64 + r;
                let mut held: Vec<Entry> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let first = store.first_index().unwrap();
                    let last = store.last_index().unwrap();
                    if last < first {
                        continue;
                    }
                    let lo = first + x % (last - first + 1);
                    let hi = (lo + 1 + x % 200).min(last + 1);
                    match store.entries(lo, hi, None, ctx()) {
                        Ok(es) => {
                            for (i, e) in es.iter().enumerate() {
                                assert_eq!(e.index, lo + i as u64);
                                check(e);
                            }
                            // Keep some views around across later writes, and re-check them.
                            if held.len() < 2000 {
                                held.extend(es.into_iter().take(8));
                            }
                        }
                        Err(e) if tolerated(&e) => {
                            tol.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("entries({lo}, {hi}): {e}"),
                    }
                    match store.term(lo) {
                        Ok(_) => {}
                        Err(e) if tolerated(&e) => {
                            tol.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("term({lo}): {e}"),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                for e in &held {
                    check(e);
                }
            })
        })
        .collect();

    // The writer: appends, overwrites a suffix with a higher term, snapshots, and now and then
    // installs a received snapshot ahead of the log.
    let mut term = 1;
    let mut last = 0u64;
    let mut snap_at = 0u64;
    for round in 0..400u64 {
        // Pace the writer so the readers run throughout however the threads are scheduled:
        // round k starts once the readers made k / 2 reads (unless one of them stopped).
        while reads.load(Ordering::Relaxed) < round / 2 && !readers.iter().any(|r| r.is_finished())
        {
            thread::yield_now();
        }
        let n = 50 + (round * 37) % 400;
        let start = if round % 7 == 3 && last > snap_at + 10 {
            term += 1;
            last - (round % 10)
        } else {
            last + 1
        };
        let batch: Vec<Entry> = (start..start + n)
            .map(|i| {
                let mut e = entry_with_data(i, term, payload(i, term));
                if i.is_multiple_of(5) {
                    e.context = Bytes::from(format!("ctx-{i}-{term}"));
                }
                e
            })
            .collect();
        store
            .save(&HardState::default(), &batch, &Snapshot::default())
            .unwrap();
        last = start + n - 1;
        if round % 25 == 24 {
            snap_at = last - 20;
            store
                .create_snapshot(snap_at, None, Bytes::from(vec![round as u8; 1000]))
                .unwrap();
        }
        if round % 97 == 96 {
            term += 1;
            let mut s = Snapshot::default();
            s.mut_metadata().index = last + 100;
            s.mut_metadata().term = term;
            s.data = Bytes::from_static(b"received");
            store.save(&HardState::default(), &[], &s).unwrap();
            snap_at = last + 100;
            last = snap_at;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader panicked");
    }
    assert!(reads.load(Ordering::Relaxed) > 100, "readers barely ran");
    println!(
        "reads: {}, tolerated Compacted/Unavailable: {}",
        reads.load(Ordering::Relaxed),
        tolerated_errors.load(Ordering::Relaxed)
    );
}
