//! Core engine benchmarks (criterion): append over payload size x entries per save x sync
//! policy, `entries()` on a hot cache, `term()` at random indexes, open of a 1 M-entry log,
//! `create_snapshot` with file cleanup, and `truncate_entries_until` as an apply loop calls it.
//!
//! `cargo bench --bench append` (a filter narrows it: `cargo bench --bench append -- synced`).
//! Payloads are random (incompressible) bytes. Side-by-side ratios against raft-engine,
//! MemStorage and the raw device are in `benches/compare.rs`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft::prelude::{HardState, Snapshot};
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Options};

#[path = "common/payload.rs"]
mod payload;
use payload::{batch, Rng};

fn append(c: &mut Criterion, size: usize, per_save: usize, sync: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        sync_writes: sync,
        ..Default::default()
    };
    let store = DiskStorage::open_with(dir.path(), opts).expect("open");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next = 1u64;
    let hs = HardState::default();
    let snap = Snapshot::default();
    let name = format!(
        "{}_{}_x{per_save}",
        if sync { "synced" } else { "unsynced" },
        match size {
            s if s >= 1024 => format!("{}KiB", s / 1024),
            s => format!("{s}B"),
        }
    );
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(per_save as u64));
    if sync || size * per_save > (1 << 20) {
        g.sample_size(20);
    }
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                let es = batch(&mut rng, next, per_save, size);
                next += per_save as u64;
                es
            },
            |es| store.save(&hs, &es, &snap).expect("save"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn appends(c: &mut Criterion) {
    for sync in [true, false] {
        for size in [128, 1024, 16 << 10] {
            for per_save in [1, 64, 256] {
                append(c, size, per_save, sync);
            }
        }
    }
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let store = DiskStorage::open_with(dir.path(), opts).expect("open");
    let mut rng = Rng(42);
    let n = 100_000u64;
    for first in (1..=n).step_by(1000) {
        let es = batch(&mut rng, first, 1000, 1024);
        store
            .save(&HardState::default(), &es, &Snapshot::default())
            .expect("save");
    }
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(64));
    g.bench_function("entries_64x1KiB", |b| {
        b.iter(|| {
            let lo = 1 + rng.next() % (n - 64);
            store
                .entries(lo, lo + 64, None, GetEntriesContext::empty(false))
                .expect("entries")
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("term_random", |b| {
        b.iter(|| store.term(1 + rng.next() % n).expect("term"))
    });
    g.finish();
}

/// Opening a cleanly closed log of 1 M entries of 256 B (30+ files): recovery reads headers,
/// the first and last slot of sealed files and the tail file, not every payload.
fn open_1m(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let opts = Options {
            sync_writes: false,
            ..Default::default()
        };
        let store = DiskStorage::open_with(dir.path(), opts).expect("open");
        let mut rng = Rng(7);
        for first in (1..=1_000_000u64).step_by(10_000) {
            let es = batch(&mut rng, first, 10_000, 256);
            store
                .save(&HardState::default(), &es, &Snapshot::default())
                .expect("save");
        }
        store.close().expect("close");
    }
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function("open_1M_x256B", |b| {
        b.iter(|| {
            let s = DiskStorage::open(dir.path()).expect("open");
            assert_eq!(s.last_index().expect("last"), 1_000_000);
            s
        })
    });
    g.finish();
}

/// `create_snapshot` at the end of a 90,000-entry log (3 files): snapshot file written and
/// synced, meta page updated, the two files below it removed.
fn snapshot_with_cleanup(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.bench_function("create_snapshot_64KiB_removing_2_files", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let opts = Options {
                    sync_writes: false,
                    ..Default::default()
                };
                let store = DiskStorage::open_with(dir.path(), opts).expect("open");
                let mut rng = Rng(11);
                for first in (1..=90_000u64).step_by(10_000) {
                    let es = batch(&mut rng, first, 10_000, 64);
                    store
                        .save(&HardState::default(), &es, &Snapshot::default())
                        .expect("save");
                }
                store.sync().expect("sync");
                (dir, store, rng.bytes(64 << 10))
            },
            |(dir, store, data)| {
                store.create_snapshot(89_999, None, data).expect("snapshot");
                assert_eq!(store.num_log_files(), 1);
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// An apply loop that drops the data it applied: 100 entries of 1 KiB saved, then
/// `truncate_entries_until` up to them, on a log of about 29,000 entries that is never compacted
/// (one 30,000-slot file; unsynced, so the figure is the call's own work). One iteration is one
/// save and one truncation. A truncation reads only what it newly drops (docs/PERFORMANCE.md,
/// "`truncate_entries_until` in an apply loop").
fn truncate_in_an_apply_loop(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let store = DiskStorage::open_with(dir.path(), opts).expect("open");
    let mut rng = Rng(17);
    let (hs, snap) = (HardState::default(), Snapshot::default());
    for first in (1..=28_000u64).step_by(1_000) {
        let es = batch(&mut rng, first, 1_000, 1024);
        store.save(&hs, &es, &snap).expect("save");
    }
    store.truncate_entries_until(28_001).expect("truncate");
    let mut next = 28_001u64;
    let mut g = c.benchmark_group("truncate");
    g.throughput(Throughput::Elements(100));
    g.bench_function("save_100x1KiB_then_truncate_them", |b| {
        b.iter_batched(
            || {
                // Within the first file: start over below its end (an overwrite, which the
                // next truncation clears again).
                if next + 100 > 30_000 {
                    next = 28_001;
                }
                let es = batch(&mut rng, next, 100, 1024);
                next += 100;
                (es, next)
            },
            |(es, until)| {
                store.save(&hs, &es, &snap).expect("save");
                store
                    .truncate_entries_until(until)
                    .expect("truncate_entries_until");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    appends,
    reads,
    open_1m,
    snapshot_with_cleanup,
    truncate_in_an_apply_loop
);
criterion_main!(benches);
