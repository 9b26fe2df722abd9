//! Core engine benchmarks: append (synced and not), `entries()` on a hot cache, `term()`.
//!
//! `cargo bench --bench append`. Payloads are random (incompressible) bytes.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft::prelude::{Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Options};

/// A small xorshift generator: deterministic, incompressible payloads without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn batch(rng: &mut Rng, first: u64, n: usize, size: usize) -> Vec<Entry> {
    (0..n as u64)
        .map(|i| {
            let mut e = Entry::default();
            e.index = first + i;
            e.term = 1;
            e.data = rng.bytes(size).into();
            e
        })
        .collect()
}

fn append(c: &mut Criterion, name: &str, size: usize, per_save: usize, sync: bool) {
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
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(per_save as u64));
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
    append(c, "synced_1KiB_x64", 1024, 64, true);
    append(c, "synced_128B_x1", 128, 1, true);
    append(c, "unsynced_128B_x256", 128, 256, false);
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

criterion_group!(benches, appends, reads);
criterion_main!(benches);
