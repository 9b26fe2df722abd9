//! The log's index lives in the map, not on the heap: with 10 M entries in the log the heap stays
//! under 32 MiB (docs/DESIGN.md §5). A counting global allocator tracks live heap bytes and their
//! peak while the log is written, reopened and read. An engine root's journal replay (and the
//! tools' read of it) holds heap in proportion to the records' bytes, however many parts they
//! hold.
//!
//! The tests share the allocator's counters: each holds [`MEASURING`] while it measures.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Options};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/roots.rs"]
mod roots;
use counting_alloc::{LIVE, PEAK};

/// Held by a test while it reads the counters (tests run on threads of one process).
static MEASURING: Mutex<()> = Mutex::new(());

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
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
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

/// Where the journal's records end in an engine root (its segments read as docs/FORMAT.md lays
/// them out): the segment holding the newest record, the offset past it, and the next sequence
/// number.
fn journal_end(root: &std::path::Path) -> (std::path::PathBuf, usize, u64) {
    let mut segments: Vec<_> = std::fs::read_dir(root.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .collect();
    segments.sort();
    let mut end = None;
    for path in segments {
        let bytes = std::fs::read(&path).unwrap();
        let first = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        let (mut at, mut seq) = (4096usize, first);
        loop {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            if len == 0
                || at + 16 + len > bytes.len()
                || crc32c::crc32c(&bytes[at + 8..at + 16 + len]) != crc
            {
                break;
            }
            seq += 1;
            at = (at + 16 + len).next_multiple_of(8);
        }
        if seq > first {
            end = Some((path, at, seq));
        }
    }
    end.expect("a record in the journal")
}

/// A journal record (its checksum valid, as a writer's bug would leave it) of 4 MiB holding
/// 246,723 parts with no section (17 bytes each), alternately for the root's group and for a
/// group that does not exist: open replays it, and the read-only tools read it, without heap
/// beyond twice the record's bytes besides the segments the tools read whole. Each part was once
/// decoded into about 560 bytes and every record's parts held until replay ended: open peaked
/// at 105 MB, the tools at 168 MB (with 32 MiB segments).
#[test]
fn a_record_of_many_empty_parts_replays_in_heap_proportional_to_its_bytes() {
    use raftwal::inspect::engine::EngineInspector;
    use raftwal::{Engine, EngineOptions, WriteBatch};

    let dir = tempfile::tempdir().unwrap();
    let (root, image) = (dir.path().join("root"), dir.path().join("image"));
    // The tools read each segment whole into the heap (they map nothing): small segments keep
    // that part of the peak small beside the record's.
    const SEGMENT: usize = 8 << 20;
    let opts = EngineOptions {
        checkpoint_bytes: u64::MAX / 2,
        journal_segment_bytes: SEGMENT as u64,
        ..Default::default()
    };
    let e = Engine::open_with(&root, opts.clone()).unwrap();
    let g = e.create_group(1, 1).unwrap();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 3;
    let mut b = WriteBatch::new();
    b.save(
        1,
        &hs,
        &batch(1, &Bytes::from_static(b"data"))[..3],
        &Snapshot::default(),
    );
    e.write(&mut b).unwrap();
    // The image a kill leaves: the record is after the checkpoint, replayed at open.
    roots::kill_image(&root, &image);
    drop(g);
    e.close().unwrap();

    const BODY: usize = 4 << 20;
    let (segment, at, seq) = journal_end(&image);
    let mut body = Vec::with_capacity(BODY);
    for k in 0..BODY / 17 {
        body.extend_from_slice(&(if k % 2 == 0 { 1u64 } else { 999 }).to_le_bytes());
        body.extend_from_slice(&1u64.to_le_bytes());
        body.push(0);
    }
    let mut rec = Vec::new();
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(&body);
    let crc = crc32c::crc32c(&rec[8..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    let mut bytes = std::fs::read(&segment).unwrap();
    assert!(at + rec.len() <= bytes.len(), "the record fits the segment");
    bytes[at..at + rec.len()].copy_from_slice(&rec);
    std::fs::write(&segment, bytes).unwrap();
    drop((body, rec));

    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // Two segments read whole (the tools), and twice the record's bytes.
    let limit = 2 * SEGMENT + 2 * BODY;
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let tools = EngineInspector::open_once(&image, None, None).unwrap();
    assert_eq!(tools.summary().groups.len(), 1);
    drop(tools);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    println!("the tools' read: heap peaked at {peak} bytes");
    assert!(peak < limit, "the tools' read peaked at {peak} bytes");

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let e = Engine::open_with(&image, opts).unwrap();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    println!("open: heap peaked at {peak} bytes");
    let g = e.group(1).expect("group 1");
    assert_eq!((g.first_index().unwrap(), g.last_index().unwrap()), (1, 3));
    assert_eq!(g.initial_state().unwrap().hard_state, hs);
    assert!(peak < limit, "open peaked at {peak} bytes");
}
