//! The read path measured as docs/DESIGN.md §5 describes, for profiling: 200,000 entries of 1 KiB
//! written in saves of 1,000 (`sync_writes: false`, then `sync()`), the same entries put in
//! MemStorage with `wl().append`, then consecutive 64-entry windows read over the whole log
//! (`max_size` None), median of passes; and `term(i)` at random i.
//!
//! ```sh
//! cargo run --release --example read_path                 # alternating, 5 rounds of 3 passes
//! cargo run --release --example read_path -- 9            # 9 rounds
//! # instruction counts of one pass (callgrind; counts only inside `read_pass_*`):
//! valgrind --tool=callgrind --toggle-collect='*read_pass*' \
//!     target/release/examples/read_path disk
//! ```
//! Modes: a number of rounds (alternating; default 5), `disk`, `mem`, `group`, `term-disk`,
//! `term-mem`, `term-group` (one pass of that contender alone, for callgrind: divide the count
//! by 199,936 entries or 5,000,000 lookups). `TERM_SPAN=n` draws the `term` indexes from
//! `[1, n]`. `group` is one group of an `Engine` holding the same entries (reopened: read from
//! the group's files).

use std::hint::black_box;
use std::time::Instant;

use raft::prelude::{Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Engine, EngineOptions, Options};

const N: u64 = 200_000;
const SIZE: usize = 1024;
const PER_SAVE: u64 = 1_000;
const WINDOW: u64 = 64;
const TERM_OPS: usize = 5_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn batch(rng: &mut Rng, first: u64, n: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|index| {
            let mut data = Vec::with_capacity(SIZE + 8);
            while data.len() < SIZE {
                data.extend_from_slice(&rng.next().to_le_bytes());
            }
            data.truncate(SIZE);
            let mut e = Entry::default();
            e.index = index;
            e.term = 1 + index / 50_000;
            e.data = data.into();
            e
        })
        .collect()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// One pass of consecutive 64-entry windows over the whole log; entries/s.
#[inline(never)]
fn read_pass<S: Storage>(s: &S) -> f64 {
    let t0 = Instant::now();
    let mut lo = 1;
    while lo + WINDOW <= N + 1 {
        let v = s.entries(lo, lo + WINDOW, None, ctx()).expect("entries");
        assert_eq!(v.len(), WINDOW as usize);
        black_box(v);
        lo += WINDOW;
    }
    (lo - 1) as f64 / t0.elapsed().as_secs_f64()
}

fn term_indexes() -> Vec<u64> {
    let mut rng = Rng(0x7E57_0001);
    // TERM_SPAN: look up indexes in [1, TERM_SPAN] only (all of the log by default).
    let span = std::env::var("TERM_SPAN").map_or(N, |s| s.parse().expect("TERM_SPAN"));
    (0..TERM_OPS).map(|_| 1 + rng.next() % span).collect()
}

#[inline(never)]
fn term_pass<S: Storage>(s: &S, idx: &[u64]) -> f64 {
    let t0 = Instant::now();
    for &i in idx {
        black_box(s.term(black_box(i)).expect("term"));
    }
    idx.len() as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "5".to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), &arg);
}

fn run(dir: &std::path::Path, arg: &str) {
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let disk = DiskStorage::open_with(dir, opts).expect("open");
    let mem = MemStorage::new();
    let mut rng = Rng(0x5EED_0005);
    let mut first = 1;
    while first <= N {
        let es = batch(&mut rng, first, PER_SAVE);
        disk.save(&HardState::default(), &es, &Snapshot::default())
            .expect("save");
        mem.wl().append(&es).expect("append");
        first += PER_SAVE;
    }
    disk.sync().expect("sync");
    // The same entries in one group of an Engine, read after a reopen (from the group's files,
    // as most reads of a log that is not growing are).
    let root = dir.join("engine");
    {
        let engine = Engine::open_with(
            &root,
            EngineOptions {
                sync_writes: false,
                ..Default::default()
            },
        )
        .expect("engine open");
        let g = engine.create_group(1, 1).expect("create_group");
        let mut lo = 1;
        while lo <= N {
            let es = disk
                .entries(lo, lo + PER_SAVE, None, ctx())
                .expect("entries");
            g.save(&HardState::default(), &es, &Snapshot::default())
                .expect("group save");
            lo += PER_SAVE;
        }
        engine.close().expect("engine close");
    }
    let engine = Engine::open(&root).expect("engine reopen");
    let group = engine.group(1).expect("group 1");
    let idx = term_indexes();

    match arg {
        "disk" => {
            eprintln!("disk: {:.1} M entries/s", read_pass(&disk) / 1e6);
            return;
        }
        "mem" => {
            eprintln!("mem: {:.1} M entries/s", read_pass(&mem) / 1e6);
            return;
        }
        "group" => {
            eprintln!("group: {:.1} M entries/s", read_pass(&group) / 1e6);
            return;
        }
        "term-group" => {
            eprintln!("term group: {:.1} M/s", term_pass(&group, &idx) / 1e6);
            return;
        }
        "term-disk" => {
            eprintln!("term disk: {:.1} M/s", term_pass(&disk, &idx) / 1e6);
            return;
        }
        "term-mem" => {
            eprintln!("term mem: {:.1} M/s", term_pass(&mem, &idx) / 1e6);
            return;
        }
        _ => {}
    }
    if let Some(rounds) = arg.strip_prefix("term-only-") {
        let rounds: usize = rounds.parse().expect("term-only-N");
        let mut ratios = Vec::new();
        for _ in 0..rounds {
            let (mut d, mut m) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                d.push(term_pass(&disk, &idx));
                m.push(term_pass(&mem, &idx));
            }
            ratios.push(median(d) / median(m));
        }
        println!(
            "term: {:.2}x MemStorage (median of {rounds} rounds)",
            median(ratios)
        );
        return;
    }
    let rounds: usize = arg
        .parse()
        .expect("mode: a number of rounds, disk, mem, term-*");
    // Both contenders agree, and every entry has been read once.
    let mut lo = 1;
    while lo + WINDOW <= N + 1 {
        let a = disk.entries(lo, lo + WINDOW, None, ctx()).expect("entries");
        let b = mem.entries(lo, lo + WINDOW, None, ctx()).expect("entries");
        let c = group
            .entries(lo, lo + WINDOW, None, ctx())
            .expect("entries");
        assert!(a == b && b == c, "contenders disagree at {lo}");
        lo += WINDOW;
    }
    let (mut ratios, mut term_ratios) = (Vec::new(), Vec::new());
    let (mut g_ratios, mut g_term_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Median of 3 passes per contender, the contenders alternating pass by pass (the
        // order rotated every round).
        let (mut d, mut m, mut g) = (Vec::new(), Vec::new(), Vec::new());
        let (mut td, mut tm, mut tg) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            for k in 0..3 {
                match (k + round) % 3 {
                    0 => {
                        d.push(read_pass(&disk));
                        td.push(term_pass(&disk, &idx));
                    }
                    1 => {
                        m.push(read_pass(&mem));
                        tm.push(term_pass(&mem, &idx));
                    }
                    _ => {
                        g.push(read_pass(&group));
                        tg.push(term_pass(&group, &idx));
                    }
                }
            }
        }
        let (d, m, g) = (median(d), median(m), median(g));
        let (td, tm, tg) = (median(td), median(tm), median(tg));
        ratios.push(d / m);
        term_ratios.push(td / tm);
        g_ratios.push(g / m);
        g_term_ratios.push(tg / tm);
        println!(
            "round {round}: entries disk {:.1} group {:.1} mem {:.1} M/s = {:.2}x, {:.2}x; term disk {:.1} group {:.1} mem {:.1} M/s = {:.2}x, {:.2}x",
            d / 1e6,
            g / 1e6,
            m / 1e6,
            d / m,
            g / m,
            td / 1e6,
            tg / 1e6,
            tm / 1e6,
            td / tm,
            tg / tm
        );
    }
    println!(
        "median ratio (GroupStorage): entries {:.2}x MemStorage, term {:.2}x MemStorage",
        median(g_ratios),
        median(g_term_ratios)
    );
    println!(
        "median ratio: entries {:.2}x MemStorage, term {:.2}x MemStorage",
        median(ratios),
        median(term_ratios)
    );
}
