//! Side-by-side comparison on the docs/DESIGN.md §5 workloads: raftwal vs raft-engine 0.4 (default
//! config) vs a raw file (the device's ceiling) vs raft-rs `MemStorage`.
//!
//! `cargo bench --bench compare` (full, a few minutes) or `cargo bench --bench compare -- --quick`
//! (smaller workloads, fewer runs). Every workload runs in this one process: the contenders take
//! turns (raftwal, raft-engine, raw, ..., raftwal again, ...) for several rounds, each append run
//! in a fresh temporary directory, all writing the same `Entry` values (random, incompressible
//! payloads from a deterministic xorshift generator) with the same durability. Figures are
//! medians over the runs; ratios are ratios of those medians. Entries are built before the timed
//! region; the timed region is the save/write call itself (each call is timed for p50/p99).
//!
//! Prints a table per workload and a summary of the targets of docs/DESIGN.md §5 and §9, and writes
//! the same figures to `$CARGO_TARGET_DIR/compare.json` (else `target/compare.json` under the
//! crate). Arguments that do not start with `-` keep only the workloads whose names contain one of
//! them (`cargo bench --bench compare -- synced_append_1KiB`); such a run writes no JSON.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use raft::prelude::{Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage};
use raft_engine::{Config as EngineConfig, Engine, LogBatch, MessageExt};
use raftwal::{DiskStorage, Options};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

/// raft-engine's view of a raft-rs `Entry`.
struct M;

impl MessageExt for M {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// The one raft group every raft-engine run writes.
const REGION: u64 = 1;

/// Bytes of per-entry header the raw contender writes in front of each payload (raftwal's slot
/// size), so that it writes about as many bytes as the engines do.
const RAW_HEADER: usize = 32;

#[path = "common/multigroup.rs"]
mod multigroup;
#[path = "common/payload.rs"]
mod payload;
use payload::{batch, Rng};

impl Rng {
    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What the raw contender writes for one save: per entry a 32-byte header (term, index, offset,
/// length, a checksum-sized word) followed by the payload.
fn raw_bytes(es: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(es.iter().map(|e| RAW_HEADER + e.data.len()).sum());
    for e in es {
        let mut h = [0u8; RAW_HEADER];
        h[0..8].copy_from_slice(&e.term.to_le_bytes());
        h[8..16].copy_from_slice(&e.index.to_le_bytes());
        h[16..24].copy_from_slice(&(out.len() as u64).to_le_bytes());
        h[24..28].copy_from_slice(&(e.data.len() as u32).to_le_bytes());
        h[28..32].copy_from_slice(&(e.index as u32 ^ 0x5bd1_e995).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&e.data);
    }
    out
}

fn tmpdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("raftwal-compare-")
        .tempdir()
        .expect("tempdir")
}

fn engine_cfg(dir: &Path) -> EngineConfig {
    EngineConfig {
        dir: dir.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// Sizes of everything, per mode.
struct Cfg {
    quick: bool,
    /// Alternating rounds: synced appends (short runs, many rounds: the disk's speed drifts),
    /// unsynced appends, reads.
    synced_rounds: usize,
    unsynced_rounds: usize,
    read_rounds: usize,
    w1_saves: usize,
    /// Saves per run of the compacting 1 KiB x 64 workload, and its rounds.
    w1c_saves: usize,
    compacting_rounds: usize,
    w2_saves: usize,
    w3_saves: usize,
    read_log: u64,
    reads_per_run: usize,
    term_ops: usize,
    term_ops_engine: usize,
    open_entries: u64,
    open_rounds: usize,
    /// Alternating runs of each multigroup workload.
    multigroup_runs: usize,
}

impl Cfg {
    fn new(quick: bool) -> Cfg {
        if quick {
            Cfg {
                quick,
                synced_rounds: 14,
                unsynced_rounds: 7,
                read_rounds: 5,
                w1_saves: 200,
                w1c_saves: 1_500,
                compacting_rounds: 3,
                w2_saves: 600,
                w3_saves: 1_000,
                read_log: 20_000,
                reads_per_run: 20_000,
                term_ops: 2_000_000,
                term_ops_engine: 20_000,
                open_entries: 200_000,
                open_rounds: 5,
                multigroup_runs: 2,
            }
        } else {
            Cfg {
                quick,
                synced_rounds: 31,
                unsynced_rounds: 15,
                read_rounds: 11,
                w1_saves: 600,
                w1c_saves: 2_400,
                compacting_rounds: 7,
                w2_saves: 2_000,
                w3_saves: 4_000,
                read_log: 100_000,
                reads_per_run: 50_000,
                term_ops: 5_000_000,
                term_ops_engine: 50_000,
                open_entries: 1_000_000,
                open_rounds: 9,
                multigroup_runs: 5,
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum C {
    Raftwal,
    /// raftwal with `recycle_log_files: false` (the compacting workload only).
    RaftwalNoRecycle,
    RaftEngine,
    Raw,
    RawPrealloc,
    Mem,
    /// A `DiskStorage` per group (the multigroup workloads only).
    PerGroup,
}

impl C {
    fn name(self) -> &'static str {
        match self {
            C::Raftwal => "raftwal",
            C::RaftwalNoRecycle => "raftwal_no_recycle",
            C::RaftEngine => "raft-engine",
            C::Raw => "raw",
            C::RawPrealloc => "raw_prealloc",
            C::Mem => "MemStorage",
            C::PerGroup => "disk_storage_per_group",
        }
    }
}

/// One timed run of one contender.
struct Run {
    secs: f64,
    entries: u64,
    ops: u64,
    payload_bytes: u64,
    /// Per-call latencies in nanoseconds, when each call was timed.
    lat_ns: Vec<u64>,
}

/// Medians over the runs of one contender.
struct Stats {
    name: String,
    entries_per_s: f64,
    ops_per_s: f64,
    mib_per_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    run_ms: f64,
    /// (max - min) / median of the per-run throughputs, in percent: how noisy the runs were.
    spread_pct: f64,
    /// Median over rounds of raftwal's throughput / this contender's in the same round.
    paired_ratio: f64,
    runs_entries_per_s: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64
}

fn stats(name: &str, runs: &[Run]) -> Stats {
    let eps: Vec<f64> = runs.iter().map(|r| r.entries as f64 / r.secs).collect();
    let ops = median(runs.iter().map(|r| r.ops as f64 / r.secs).collect());
    let mib = if runs.iter().all(|r| r.payload_bytes > 0) {
        Some(median(
            runs.iter()
                .map(|r| r.payload_bytes as f64 / r.secs / (1 << 20) as f64)
                .collect(),
        ))
    } else {
        None
    };
    let (p50, p99) = if runs.iter().all(|r| !r.lat_ns.is_empty()) {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for r in runs {
            let mut l = r.lat_ns.clone();
            l.sort_unstable();
            p50s.push(percentile(&l, 0.50) / 1e3);
            p99s.push(percentile(&l, 0.99) / 1e3);
        }
        (Some(median(p50s)), Some(median(p99s)))
    } else {
        (None, None)
    };
    let med = median(eps.clone());
    let max = eps.iter().cloned().fold(f64::MIN, f64::max);
    let min = eps.iter().cloned().fold(f64::MAX, f64::min);
    Stats {
        name: name.to_string(),
        entries_per_s: med,
        spread_pct: (max - min) / med * 100.0,
        paired_ratio: 1.0,
        ops_per_s: ops,
        mib_per_s: mib,
        p50_us: p50,
        p99_us: p99,
        run_ms: median(runs.iter().map(|r| r.secs * 1e3).collect()),
        runs_entries_per_s: eps,
    }
}

/// Runs `f` for each contender in turn, `rounds` times over (after one warm-up round), and
/// returns the counted runs per contender.
fn alternate(
    label: &str,
    rounds: usize,
    contenders: &[C],
    mut f: impl FnMut(C, usize) -> Run,
) -> Vec<(C, Vec<Run>)> {
    let k = contenders.len();
    let mut out: Vec<(C, Vec<Run>)> = contenders.iter().map(|&c| (c, Vec::new())).collect();
    // Round 0 is a warm-up (first runs of a workload after the previous one are often outliers),
    // shown on stderr but not counted.
    for round in 0..=rounds {
        if round == 0 {
            eprint!("  [{label}] warm-up (not counted):");
        } else {
            eprint!("  [{label}] round {round}/{rounds}:");
        }
        // Each round starts with the next contender, so none always runs first or after the same
        // neighbour.
        for j in 0..k {
            let (c, runs) = &mut out[(round + j) % k];
            let r = f(*c, round);
            eprint!(" {} {:.0} e/s;", c.name(), r.entries as f64 / r.secs);
            if round > 0 {
                runs.push(r);
            }
        }
        eprintln!();
    }
    out
}

/// Times `n` calls of `f`, each one separately; returns the total and the per-call latencies.
fn timed_calls(n: usize, mut f: impl FnMut(usize)) -> (f64, Vec<u64>) {
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        f(i);
        lat.push(s.elapsed().as_nanos() as u64);
    }
    (t0.elapsed().as_secs_f64(), lat)
}

/// `syncfs` on the file system holding the temporary directories.
fn settle() {
    let d = File::open(std::env::temp_dir()).expect("open temp dir");
    // SAFETY: a plain syscall on a valid, open descriptor.
    let rc = unsafe { libc::syncfs(d.as_raw_fd()) };
    assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
}

fn fallocate(f: &File, len: u64) {
    // SAFETY: a plain syscall on a valid, open descriptor.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
}

/// An append workload: the same batches for every contender.
struct AppendLoad {
    batches: Vec<Vec<Entry>>,
    raws: Vec<Vec<u8>>,
    sync: bool,
    entries: u64,
    payload_bytes: u64,
    /// Compact the log (a snapshot at the last index) whenever this many entries were appended
    /// since the last compaction, inside the timed call that crossed the mark, as a raft node's
    /// log is compacted behind it. `None`: never.
    compact_every: Option<u64>,
}

impl AppendLoad {
    fn new(seed: u64, saves: usize, per_save: usize, size: usize, sync: bool) -> AppendLoad {
        let mut rng = Rng(seed);
        let batches: Vec<Vec<Entry>> = (0..saves)
            .map(|s| batch(&mut rng, 1 + (s * per_save) as u64, per_save, size))
            .collect();
        let raws = batches.iter().map(|b| raw_bytes(b)).collect();
        AppendLoad {
            batches,
            raws,
            sync,
            entries: (saves * per_save) as u64,
            payload_bytes: (saves * per_save * size) as u64,
            compact_every: None,
        }
    }

    fn compacting_every(mut self, entries: u64) -> AppendLoad {
        self.compact_every = Some(entries);
        self
    }
}

fn run_append(c: C, w: &AppendLoad) -> Run {
    let dir = tmpdir();
    let hs = HardState::default();
    let snap = Snapshot::default();
    let n = w.batches.len();
    let due = |since: &mut u64, i: usize| match w.compact_every {
        Some(every) => {
            *since += w.batches[i].len() as u64;
            let due = *since >= every;
            if due {
                *since = 0;
            }
            due
        }
        None => false,
    };
    let (secs, lat) = match c {
        C::Raftwal | C::RaftwalNoRecycle => {
            let opts = Options {
                sync_writes: w.sync,
                recycle_log_files: c == C::Raftwal,
                ..Default::default()
            };
            let store = DiskStorage::open_with(dir.path(), opts).expect("open");
            let mut since = 0;
            let r = timed_calls(n, |i| {
                store.save(&hs, &w.batches[i], &snap).expect("save");
                if due(&mut since, i) {
                    let last = store.last_index().expect("last_index");
                    store
                        .create_snapshot(last, None, "state")
                        .expect("create_snapshot");
                }
            });
            store.sync().expect("sync");
            assert_eq!(store.last_index().expect("last_index"), w.entries);
            store.close().expect("close");
            r
        }
        C::RaftEngine => {
            let engine = Engine::open(engine_cfg(dir.path())).expect("engine open");
            let mut lb = LogBatch::default();
            let mut since = 0;
            let r = timed_calls(n, |i| {
                lb.add_entries::<M>(REGION, &w.batches[i])
                    .expect("add_entries");
                engine.write(&mut lb, w.sync).expect("write");
                if due(&mut since, i) {
                    let last = engine.last_index(REGION).expect("last_index");
                    engine.compact_to(REGION, last);
                    engine.purge_expired_files().expect("purge");
                }
            });
            engine.sync().expect("engine sync");
            assert_eq!(engine.last_index(REGION), Some(w.entries));
            r
        }
        C::Raw => {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("raw.log"))
                .expect("raw open");
            let r = timed_calls(n, |i| {
                f.write_all(&w.raws[i]).expect("write");
                if w.sync {
                    f.sync_data().expect("fdatasync");
                }
            });
            f.sync_data().expect("fdatasync");
            r
        }
        C::RawPrealloc => {
            let f = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(true)
                .open(dir.path().join("raw.log"))
                .expect("raw open");
            let total: usize = w.raws.iter().map(|r| r.len()).sum();
            fallocate(&f, total as u64);
            f.sync_all().expect("fsync");
            File::open(dir.path())
                .and_then(|d| d.sync_all())
                .expect("dir fsync");
            let mut off = 0u64;
            let r = timed_calls(n, |i| {
                f.write_all_at(&w.raws[i], off).expect("pwrite");
                off += w.raws[i].len() as u64;
                if w.sync {
                    f.sync_data().expect("fdatasync");
                }
            });
            f.sync_data().expect("fdatasync");
            r
        }
        C::PerGroup => unreachable!("the append workloads have one group"),
        C::Mem => {
            let store = MemStorage::new();
            let r = timed_calls(n, |i| store.wl().append(&w.batches[i]).expect("append"));
            assert_eq!(store.last_index().expect("last_index"), w.entries);
            r
        }
    };
    // Remove this run's files and commit the file system's journal now, with the clock stopped,
    // rather than during the next contender's run.
    drop(dir);
    settle();
    Run {
        secs,
        entries: w.entries,
        ops: n as u64,
        payload_bytes: w.payload_bytes,
        lat_ns: lat,
    }
}

/// A workload's results: one row per contender (raftwal first).
struct Workload {
    name: &'static str,
    desc: String,
    notes: Vec<String>,
    rows: Vec<Stats>,
    per_save: Option<usize>,
    runs: usize,
    entries_per_run: u64,
    /// For the open workload: report ratio as time and show open ms.
    is_open: bool,
}

impl Workload {
    fn row(&self, name: &str) -> &Stats {
        self.rows
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no row {name} in {}", self.name))
    }

    /// raftwal's throughput divided by `name`'s (higher is better for raftwal).
    fn ratio(&self, name: &str) -> f64 {
        self.row("raftwal").entries_per_s / self.row(name).entries_per_s
    }
}

fn to_workload(
    name: &'static str,
    desc: String,
    runs: &[(C, Vec<Run>)],
    per_save: Option<usize>,
) -> Workload {
    Workload {
        name,
        desc,
        notes: Vec::new(),
        rows: runs
            .iter()
            .map(|(c, r)| {
                let mut s = stats(c.name(), r);
                let wal = &runs[0].1;
                s.paired_ratio = median(
                    wal.iter()
                        .zip(r)
                        .map(|(a, b)| (a.entries as f64 / a.secs) / (b.entries as f64 / b.secs))
                        .collect(),
                );
                s
            })
            .collect(),
        per_save,
        runs: runs[0].1.len(),
        entries_per_run: runs[0].1[0].entries,
        is_open: false,
    }
}

fn append_workload(
    name: &'static str,
    desc: &str,
    rounds: usize,
    load: AppendLoad,
    per_save: usize,
    contenders: &[C],
) -> Workload {
    eprintln!(
        "{name}: {} saves/run x {} rounds",
        load.batches.len(),
        rounds
    );
    let runs = alternate(name, rounds, contenders, |c, _| run_append(c, &load));
    let mut w = to_workload(name, desc.to_string(), &runs, Some(per_save));
    if load.compact_every.is_some() {
        w.notes.push(
            "not a DESIGN.md §5 row: a log compacted behind the writer, as a raft node's is; the \
             compaction is timed within the save that triggers it. raw and raw_prealloc do not \
             compact and write into fresh blocks (appended / fallocated), so a store reusing \
             written blocks may beat them while syncing every save (docs/PERFORMANCE.md)"
                .to_string(),
        );
    } else if load.sync {
        w.notes.push(format!(
            "raw = O_APPEND write_all of the same payloads + {RAW_HEADER} B header per entry, \
             then fdatasync, per save; raw_prealloc = the same bytes pwrite'd into a file \
             fallocate'd beforehand, then fdatasync (no size change per sync: the real ceiling)"
        ));
        sync_sanity(&mut w);
    } else {
        w.notes.push(format!(
            "unsynced: appends only, no final flush timed (each run flushes after the clock \
             stops); raw = O_APPEND write_all of payloads + {RAW_HEADER} B header per entry"
        ));
    }
    w
}

/// A synced contender faster than the device's ceiling is not syncing.
fn sync_sanity(w: &mut Workload) {
    let raw = w.row("raw").entries_per_s;
    let pre = w.row("raw_prealloc").entries_per_s;
    let mut warnings = Vec::new();
    for s in &w.rows {
        if s.name == "raw" || s.name == "raw_prealloc" {
            continue;
        }
        if s.entries_per_s > raw {
            let how = if s.entries_per_s > pre * 1.10 {
                format!(
                    "and >10% faster than raw_prealloc ({:.0}/s): it is most likely NOT syncing",
                    pre
                )
            } else {
                format!(
                    "but not faster than raw_prealloc ({:.0}/s, preallocated pwrite + fdatasync): \
                     consistent with DESIGN.md §7 (an appending write changes the file size, so each \
                     fdatasync also commits metadata)",
                    pre
                )
            };
            warnings.push(format!(
                "WARNING: {} ran a synced workload faster than raw ({:.0} vs {:.0} entries/s), {}",
                s.name, s.entries_per_s, raw, how
            ));
        }
    }
    w.notes.extend(warnings);
}

/// The read workloads (4 and 5) share one pre-built log per engine.
fn reads(cfg: &Cfg) -> (Workload, Workload) {
    let n = cfg.read_log;
    let size = 1024;
    eprintln!("building a log of {n} x 1 KiB entries in each engine (64 per save, unsynced)");
    let wal_dir = tmpdir();
    let eng_dir = tmpdir();
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let wal = DiskStorage::open_with(wal_dir.path(), opts).expect("open");
    let engine = Engine::open(engine_cfg(eng_dir.path())).expect("engine open");
    let mem = MemStorage::new();
    let mut rng = Rng(0x5EED_0004);
    let mut lb = LogBatch::default();
    let mut first = 1u64;
    while first <= n {
        let k = 64.min(n - first + 1) as usize;
        let es = batch(&mut rng, first, k, size);
        wal.save(&HardState::default(), &es, &Snapshot::default())
            .expect("save");
        lb.add_entries::<M>(REGION, &es).expect("add_entries");
        engine.write(&mut lb, false).expect("write");
        mem.wl().append(&es).expect("append");
        first += k as u64;
    }
    wal.sync().expect("sync");
    engine.sync().expect("engine sync");
    assert_eq!(wal.last_index().expect("li"), n);
    assert_eq!(engine.last_index(REGION), Some(n));

    // Warm-up: read everything once through each contender (hot cache; raftwal checks each
    // entry's CRC the first time), and check the contenders agree on the data.
    let ctx = || GetEntriesContext::empty(false);
    let mut lo = 1;
    while lo + 64 <= n + 1 {
        let a = wal.entries(lo, lo + 64, None, ctx()).expect("entries");
        let b = mem.entries(lo, lo + 64, None, ctx()).expect("entries");
        let mut c = Vec::with_capacity(64);
        engine
            .fetch_entries_to::<M>(REGION, lo, lo + 64, None, &mut c)
            .expect("fetch");
        assert!(
            a == b && b == c,
            "contenders disagree on entries {lo}..{}",
            lo + 64
        );
        lo += 64;
    }

    let k = 64u64;
    eprintln!(
        "entries_64x1KiB_hot: {} reads/run x {} rounds",
        cfg.reads_per_run, cfg.read_rounds
    );
    let runs = alternate(
        "entries_64x1KiB_hot",
        cfg.read_rounds,
        &[C::Raftwal, C::RaftEngine, C::Mem],
        |c, round| {
            let mut rng = Rng(0xA11C_E000 + round as u64);
            let lows: Vec<u64> = (0..cfg.reads_per_run)
                .map(|_| rng.range(1, n - k + 1))
                .collect();
            let t0 = Instant::now();
            match c {
                C::Raftwal => {
                    for &lo in &lows {
                        let v = wal.entries(lo, lo + k, None, ctx()).expect("entries");
                        assert_eq!(v.len(), k as usize);
                        black_box(v);
                    }
                }
                C::RaftEngine => {
                    for &lo in &lows {
                        let mut v = Vec::with_capacity(k as usize);
                        engine
                            .fetch_entries_to::<M>(REGION, lo, lo + k, None, &mut v)
                            .expect("fetch");
                        assert_eq!(v.len(), k as usize);
                        black_box(v);
                    }
                }
                C::Mem => {
                    for &lo in &lows {
                        let v = mem.entries(lo, lo + k, None, ctx()).expect("entries");
                        assert_eq!(v.len(), k as usize);
                        black_box(v);
                    }
                }
                _ => unreachable!(),
            }
            let secs = t0.elapsed().as_secs_f64();
            Run {
                secs,
                entries: lows.len() as u64 * k,
                ops: lows.len() as u64,
                payload_bytes: lows.len() as u64 * k * size as u64,
                lat_ns: Vec::new(),
            }
        },
    );
    let mut w4 = to_workload(
        "entries_64x1KiB_hot",
        format!(
            "Storage::entries(lo, lo+64) at random lo on a log of {n} x 1 KiB entries \
             (written 64 per save), hot cache; ops = reads"
        ),
        &runs,
        None,
    );
    w4.notes.push(
        "raft-engine: fetch_entries_to::<M>(1, lo, lo+64, None, &mut Vec::with_capacity(64)); \
         its log was written 64 entries per batch with the default config (8 KiB compression \
         threshold: LZ4 per 64 KiB batch)"
            .to_string(),
    );

    eprintln!(
        "term_random: {} lookups/run ({} for raft-engine) x {} rounds",
        cfg.term_ops, cfg.term_ops_engine, cfg.read_rounds
    );
    let runs = alternate(
        "term_random",
        cfg.read_rounds,
        &[C::Raftwal, C::Mem, C::RaftEngine],
        |c, round| {
            let mut rng = Rng(0x7E57_0000 + round as u64);
            let ops = if c == C::RaftEngine {
                cfg.term_ops_engine
            } else {
                cfg.term_ops
            };
            let idx: Vec<u64> = (0..ops).map(|_| rng.range(1, n)).collect();
            let t0 = Instant::now();
            match c {
                C::Raftwal => {
                    for &i in &idx {
                        black_box(wal.term(black_box(i)).expect("term"));
                    }
                }
                C::Mem => {
                    for &i in &idx {
                        black_box(mem.term(black_box(i)).expect("term"));
                    }
                }
                C::RaftEngine => {
                    for &i in &idx {
                        let e = engine
                            .get_entry::<M>(REGION, black_box(i))
                            .expect("get_entry")
                            .expect("present");
                        black_box(e.term);
                    }
                }
                _ => unreachable!(),
            }
            Run {
                secs: t0.elapsed().as_secs_f64(),
                entries: ops as u64,
                ops: ops as u64,
                payload_bytes: 0,
                lat_ns: Vec::new(),
            }
        },
    );
    let mut w5 = to_workload(
        "term_random",
        format!("term(i) at random i on the same log of {n} entries; entries/s = lookups/s"),
        &runs,
        None,
    );
    for s in w5.rows.iter_mut() {
        if s.name == "raft-engine" {
            s.name = "raft-engine(get_entry)".to_string();
        }
    }
    w5.notes.push(
        "raft-engine has no term(): raft-engine(get_entry) = get_entry::<M>(1, i)?.term, which \
         reads and decodes the entry's whole batch; informational, no target"
            .to_string(),
    );
    (w4, w5)
}

/// Workload 6: open a pre-built, cleanly closed log.
fn open_workload(cfg: &Cfg) -> Workload {
    let n = cfg.open_entries;
    let size = 256;
    let per_batch = 256usize;
    eprintln!("open_1M_256B: writing {n} x 256 B entries to each engine ({per_batch} per save)");
    let wal_dir = tmpdir();
    let eng_dir = tmpdir();
    {
        let opts = Options {
            sync_writes: false,
            ..Default::default()
        };
        let wal = DiskStorage::open_with(wal_dir.path(), opts).expect("open");
        let engine = Engine::open(engine_cfg(eng_dir.path())).expect("engine open");
        let mut rng = Rng(0x5EED_0006);
        let mut lb = LogBatch::default();
        let mut first = 1u64;
        while first <= n {
            let k = (per_batch as u64).min(n - first + 1) as usize;
            let es = batch(&mut rng, first, k, size);
            wal.save(&HardState::default(), &es, &Snapshot::default())
                .expect("save");
            lb.add_entries::<M>(REGION, &es).expect("add_entries");
            engine.write(&mut lb, false).expect("write");
            first += k as u64;
        }
        wal.close().expect("close");
        engine.sync().expect("engine sync");
    }
    eprintln!("open_1M_256B: {} rounds", cfg.open_rounds);
    let runs = alternate(
        "open_1M_256B",
        cfg.open_rounds,
        &[C::Raftwal, C::RaftEngine],
        |c, _| {
            let secs = match c {
                C::Raftwal => {
                    let t0 = Instant::now();
                    let s = DiskStorage::open(wal_dir.path()).expect("open");
                    let li = s.last_index().expect("last_index");
                    let secs = t0.elapsed().as_secs_f64();
                    assert_eq!(li, n);
                    drop(s);
                    secs
                }
                C::RaftEngine => {
                    let t0 = Instant::now();
                    let e = Engine::open(engine_cfg(eng_dir.path())).expect("engine open");
                    let li = e.last_index(REGION);
                    let secs = t0.elapsed().as_secs_f64();
                    assert_eq!(li, Some(n));
                    drop(e);
                    secs
                }
                _ => unreachable!(),
            };
            Run {
                secs,
                entries: n,
                ops: 1,
                payload_bytes: n * size as u64,
                lat_ns: Vec::new(),
            }
        },
    );
    let mut w = to_workload(
        "open_1M_256B",
        format!(
            "open a cleanly closed log of {n} x 256 B entries + last_index(); entries/s = \
             entries recovered per second of open; run ms = open time"
        ),
        &runs,
        None,
    );
    w.is_open = true;
    w.notes.push(
        "ratio = raft-engine open time / raftwal open time: higher is better for raftwal; \
         target >= 2.0 (raftwal open <= 0.5x raft-engine's). Files were just written, so both \
         open from a warm page cache"
            .to_string(),
    );
    w
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".to_string(),
    }
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} K", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

fn print_workload(w: &Workload) {
    println!();
    println!("== {} ==", w.name);
    println!("   {}", w.desc);
    println!(
        "   {} entries per run, {} alternating runs, medians{}",
        w.entries_per_run,
        w.runs,
        match w.per_save {
            Some(k) => format!(", {k} entries per save"),
            None => String::new(),
        }
    );
    println!(
        "   {:<24} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10} {:>8} {:>14} {:>8}",
        "contender",
        "entries/s",
        "ops/s",
        "MiB/s",
        "p50 us",
        "p99 us",
        "run ms",
        "spread",
        "raftwal/this",
        "paired"
    );
    for s in &w.rows {
        println!(
            "   {:<24} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10.1} {:>7.0}% {:>13.2}x {:>7.2}x",
            s.name,
            fmt_rate(s.entries_per_s),
            fmt_rate(s.ops_per_s),
            fmt_opt(s.mib_per_s, 1),
            fmt_opt(s.p50_us, 1),
            fmt_opt(s.p99_us, 1),
            s.run_ms,
            s.spread_pct,
            w.ratio(&s.name),
            s.paired_ratio
        );
    }
    for n in &w.notes {
        println!("   note: {n}");
    }
}

struct Target {
    workload: &'static str,
    what: String,
    value: String,
    met: bool,
}

fn ratio_target(w: &Workload, other: &str, min: f64) -> Target {
    let r = w.ratio(other);
    Target {
        workload: w.name,
        what: format!(">= {min}x {other}"),
        value: format!("{r:.2}x"),
        met: r >= min,
    }
}

fn workload_json(w: &Workload, targets: &[Target]) -> Value {
    let mut contenders = Map::new();
    let mut throughput = Map::new();
    let mut ratios = Map::new();
    let mut paired = Map::new();
    for s in &w.rows {
        let mut o = Map::new();
        o.insert("entries_per_s".into(), json!(s.entries_per_s));
        o.insert("ops_per_s".into(), json!(s.ops_per_s));
        if let Some(m) = s.mib_per_s {
            o.insert("mib_per_s".into(), json!(m));
        }
        if let Some(p) = s.p50_us {
            o.insert("p50_us".into(), json!(p));
        }
        if let Some(p) = s.p99_us {
            o.insert("p99_us".into(), json!(p));
        }
        o.insert("median_run_ms".into(), json!(s.run_ms));
        o.insert("spread_pct".into(), json!(s.spread_pct));
        o.insert("runs_entries_per_s".into(), json!(s.runs_entries_per_s));
        contenders.insert(s.name.clone(), Value::Object(o));
        throughput.insert(s.name.clone(), json!(s.entries_per_s));
        if s.name != "raftwal" {
            ratios.insert(format!("raftwal/{}", s.name), json!(w.ratio(&s.name)));
            paired.insert(format!("raftwal/{}", s.name), json!(s.paired_ratio));
        }
    }
    let ts: Vec<Value> = targets
        .iter()
        .filter(|t| t.workload == w.name)
        .map(|t| json!({"target": t.what, "value": t.value, "met": t.met}))
        .collect();
    let mut o = Map::new();
    o.insert("description".into(), json!(w.desc));
    o.insert("entries_per_run".into(), json!(w.entries_per_run));
    o.insert("runs".into(), json!(w.runs));
    if let Some(k) = w.per_save {
        o.insert("entries_per_save".into(), json!(k));
    }
    o.insert("throughput_entries_per_s".into(), Value::Object(throughput));
    o.insert("ratios".into(), Value::Object(ratios));
    o.insert("paired_ratios_median".into(), Value::Object(paired));
    if w.is_open {
        let rw = w.row("raftwal").run_ms;
        let re = w.row("raft-engine").run_ms;
        o.insert("open_ms".into(), json!({"raftwal": rw, "raft-engine": re}));
        o.insert(
            "raft-engine_time_over_raftwal_time".into(),
            json!(w.ratio("raft-engine")),
        );
    }
    o.insert("contenders".into(), Value::Object(contenders));
    o.insert("targets".into(), Value::Array(ts));
    o.insert("notes".into(), json!(w.notes));
    Value::Object(o)
}

fn out_path() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("compare.json"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare.json"),
    }
}

fn main() {
    // cargo passes `--bench`; `--quick` picks the small sizes, and any other argument not
    // starting with `-` keeps only the workloads whose names contain it (e.g. `synced_append`).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--reopen") {
        // The child process of the multigroup footprint measure.
        let contender = &args[i + 1];
        let root = std::path::PathBuf::from(&args[i + 2]);
        let groups: u64 = args[i + 3].parse().expect("groups");
        multigroup::reopen_child(contender, &root, groups);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let cfg = Cfg::new(quick);
    let started = Instant::now();
    eprintln!(
        "raftwal compare ({} mode): progress on stderr, results on stdout",
        if cfg.quick { "quick" } else { "full" }
    );

    let synced = [C::Raftwal, C::RaftEngine, C::Raw, C::RawPrealloc];
    let mut ws = Vec::new();
    if wanted("synced_append_1KiB_x64") {
        ws.push(append_workload(
            "synced_append_1KiB_x64",
            "1 KiB entries, 64 per save, durable (fdatasync) per save",
            cfg.synced_rounds,
            AppendLoad::new(0x5EED_0001, cfg.w1_saves, 64, 1024, true),
            64,
            &synced,
        ));
    }
    if wanted("synced_append_128B_x1") {
        ws.push(append_workload(
            "synced_append_128B_x1",
            "128 B entries, 1 per save, durable (fdatasync) per save; fsync-bound",
            cfg.synced_rounds,
            AppendLoad::new(0x5EED_0002, cfg.w2_saves, 1, 128, true),
            1,
            &synced,
        ));
    }
    if wanted("unsynced_append_128B_x256") {
        ws.push(append_workload(
            "unsynced_append_128B_x256",
            "128 B entries, 256 per save, not synced (raftwal sync_writes: false, \
             raft-engine write(.., false), raw without fdatasync)",
            cfg.unsynced_rounds,
            AppendLoad::new(0x5EED_0003, cfg.w3_saves, 256, 128, false),
            256,
            &[C::Raftwal, C::RaftEngine, C::Raw, C::Mem],
        ));
    }
    if wanted("synced_append_1KiB_x64_compacting") {
        ws.push(append_workload(
            "synced_append_1KiB_x64_compacting",
            "1 KiB entries, 64 per save, durable per save, the log compacted (a snapshot at the \
             last index) every 30,000 entries",
            cfg.compacting_rounds,
            AppendLoad::new(0x5EED_0004, cfg.w1c_saves, 64, 1024, true).compacting_every(30_000),
            64,
            &[
                C::Raftwal,
                C::RaftwalNoRecycle,
                C::RaftEngine,
                C::Raw,
                C::RawPrealloc,
            ],
        ));
    }
    if wanted("entries_64x1KiB_hot") || wanted("term_random") {
        let (w4, w5) = reads(&cfg);
        ws.push(w4);
        ws.push(w5);
    }
    if wanted("open_1M_256B") {
        ws.push(open_workload(&cfg));
    }
    let mut footprint = Vec::new();
    // (name, groups, rounds per run, descriptor soft limit)
    let multigroups: [(&'static str, u64, u64, Option<u64>); 6] = [
        ("multigroup_N1", 1, if cfg.quick { 400 } else { 2000 }, None),
        (
            "multigroup_N16",
            16,
            if cfg.quick { 100 } else { 500 },
            None,
        ),
        (
            "multigroup_N128",
            128,
            if cfg.quick { 40 } else { 200 },
            None,
        ),
        (
            "multigroup_N1024",
            1024,
            if cfg.quick { 10 } else { 50 },
            None,
        ),
        (
            "multigroup_N10000",
            10_000,
            if cfg.quick { 3 } else { 10 },
            Some(1024),
        ),
        // Not a DESIGN.md §9 row: N = 10,000 for long enough (1.6 GB a run) that raftwal's
        // journal reaches its bound and the rounds run at the pace of its checkpoints, where
        // the 10 rounds above are a burst the journal absorbs (docs/PERFORMANCE.md, "A bounded
        // journal"). Its name does not contain "multigroup_N10000", so that row runs alone.
        (
            "multigroup_sustained_N10000",
            10_000,
            if cfg.quick { 3 } else { 40 },
            Some(1024),
        ),
    ];
    for (name, groups, rounds, limit) in multigroups {
        if wanted(name) {
            let load = multigroup::Load::new(groups, rounds);
            ws.push(multigroup::workload(
                name,
                &load,
                cfg.multigroup_runs,
                limit,
            ));
        }
    }
    if wanted("multigroup_footprint") || wanted("multigroup_N1024") {
        footprint = multigroup::footprint(&multigroup::Load::new(1024, 50));
    }

    let by = |name: &str| ws.iter().find(|w| w.name == name);
    let mut targets = Vec::new();
    if let Some(w1) = by("synced_append_1KiB_x64") {
        targets.push(ratio_target(w1, "raft-engine", 1.3));
        targets.push(ratio_target(w1, "raw", 0.8));
    }
    if let Some(w2) = by("synced_append_128B_x1") {
        targets.push(ratio_target(w2, "raft-engine", 1.0));
        let (p_wal, p_eng) = (
            w2.row("raftwal").p99_us.expect("p99"),
            w2.row("raft-engine").p99_us.expect("p99"),
        );
        targets.push(Target {
            workload: w2.name,
            what: "p99 per save <= raft-engine's".to_string(),
            value: format!("{p_wal:.0} us vs {p_eng:.0} us"),
            met: p_wal <= p_eng,
        });
    }
    if let Some(w3) = by("unsynced_append_128B_x256") {
        targets.push(ratio_target(w3, "raft-engine", 3.0));
    }
    if let Some(w4) = by("entries_64x1KiB_hot") {
        targets.push(ratio_target(w4, "raft-engine", 2.0));
        targets.push(ratio_target(w4, "MemStorage", 0.7));
    }
    if let Some(w5) = by("term_random") {
        targets.push(ratio_target(w5, "MemStorage", 1.0));
    }
    for name in [
        "multigroup_N16",
        "multigroup_N128",
        "multigroup_N1024",
        "multigroup_N10000",
    ] {
        if let Some(w) = by(name) {
            targets.push(ratio_target(w, "raft-engine", 1.0));
            let (p_wal, p_eng) = (
                w.row("raftwal").p99_us.expect("p99"),
                w.row("raft-engine").p99_us.expect("p99"),
            );
            targets.push(Target {
                workload: w.name,
                what: "p99 per round <= raft-engine's".to_string(),
                value: format!("{p_wal:.0} us vs {p_eng:.0} us"),
                met: p_wal <= p_eng,
            });
        }
    }
    if let Some(w) = by("multigroup_N1") {
        if w.rows.iter().any(|r| r.name == "disk_storage_per_group") {
            targets.push(ratio_target(w, "disk_storage_per_group", 0.95));
        }
    }
    if let Some(w6) = by("open_1M_256B") {
        let (t_wal, t_eng) = (w6.row("raftwal").run_ms, w6.row("raft-engine").run_ms);
        targets.push(Target {
            workload: w6.name,
            what: "open time <= 0.5x raft-engine's".to_string(),
            value: format!(
                "{t_wal:.1} ms vs {t_eng:.1} ms = {:.2}x ({:.2}x faster)",
                t_wal / t_eng,
                t_eng / t_wal
            ),
            met: t_wal <= 0.5 * t_eng,
        });
    }

    println!();
    println!(
        "raftwal side-by-side comparison ({} mode; medians of alternating runs; \
         raftwal/this = raftwal's throughput / the contender's, higher is better for raftwal; \
         paired = median over rounds of the same ratio within each round (a cross-check under \
         drifting noise; the targets use raftwal/this); spread = (max - min) / median of the \
         runs' throughputs; MiB/s counts payload bytes)",
        if cfg.quick { "quick" } else { "full" }
    );
    for w in &ws {
        print_workload(w);
    }
    if !footprint.is_empty() {
        println!();
        println!("== multigroup footprint: N = 1,024 after 50 rounds ==");
        for l in &footprint {
            println!("   {l}");
        }
    }

    println!();
    println!("== targets (docs/DESIGN.md §5) ==");
    println!(
        "   {:<28} {:<34} {:<44} result",
        "workload", "target", "measured"
    );
    for t in &targets {
        println!(
            "   {:<28} {:<34} {:<44} {}",
            t.workload,
            t.what,
            t.value,
            if t.met { "met" } else { "NOT MET" }
        );
    }
    println!(
        "   {:<28} {:<34} {:<44} (see tests)",
        "heap_10M_entries", "< 32 MiB", "not measured here"
    );
    let missed = targets.iter().filter(|t| !t.met).count();
    println!(
        "   {} of {} targets met{}",
        targets.len() - missed,
        targets.len(),
        if missed > 0 {
            " (the machine is shared and noisy: re-run before concluding)"
        } else {
            ""
        }
    );
    let warnings: Vec<&String> = ws
        .iter()
        .flat_map(|w| w.notes.iter())
        .filter(|n| n.starts_with("WARNING"))
        .collect();
    for wn in &warnings {
        println!("   {wn}");
    }

    let mut root = Map::new();
    root.insert(
        "_meta".into(),
        json!({
            "mode": if cfg.quick { "quick" } else { "full" },
            "unit": "entries_per_s; ratios are raftwal / contender (higher is better for raftwal)",
            "targets_met": targets.len() - missed,
            "targets_total": targets.len(),
            "elapsed_s": started.elapsed().as_secs_f64(),
        }),
    );
    for w in &ws {
        root.insert(w.name.to_string(), workload_json(w, &targets));
    }
    if !filters.is_empty() {
        println!();
        println!(
            "a filtered run ({}): target/compare.json left as it was",
            filters.join(", ")
        );
        return;
    }
    let path = out_path();
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("create target dir");
    }
    let text = serde_json::to_string_pretty(&Value::Object(root)).expect("json");
    std::fs::write(&path, text + "\n").expect("write compare.json");
    println!();
    println!(
        "wrote {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}
