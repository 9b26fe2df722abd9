//! The `multigroup` workload of `compare` (included with `#[path]`): N Raft groups in one
//! process each append 4 entries of 1 KiB per round, with a hard state, the round durable
//! before the next. raftwal: one `WriteBatch` per round, `Engine::write`. raft-engine 0.4
//! (default config): one `LogBatch` with every group's entries and hard state,
//! `write(&mut batch, true)`. DiskStorage per group (where descriptors allow): every group's
//! `save` unsynced, then every group's `sync()` (one fdatasync each). Each round's write is
//! timed (p50/p99 round latency).
//!
//! At N = 1,024 (after 50 rounds) the footprint is measured as well: allocated disk blocks,
//! descriptors held while open, and, in a child process of this binary, the time to reopen and
//! the resident memory after reopen.
//!
//! Beside each run's time the workload notes what the run cost the machine (`Usage`): CPU time
//! of the whole process, and what the disk under the run's directory did: bytes written, time
//! busy, the size and wait of its write requests, its flushes and their wait (Linux's
//! `/sys/dev/block/MAJOR:MINOR/stat`; left out where that is missing), to tell a run bound by
//! the device from one bound by the processors, and a journal flush queued behind the groups'
//! write-back from one that is slow on its own.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use raft::prelude::{Entry, HardState};
use raft_engine::{Engine as ReEngine, LogBatch};
use raftwal::{DiskStorage, Engine, EngineOptions, Options, WriteBatch};

use super::payload::Rng;
use super::{alternate, engine_cfg, settle, timed_calls, tmpdir, to_workload, Run, Workload, C, M};

/// Payloads cycled through (4 MiB of distinct random bytes: LZ4's 64 KiB window finds no
/// repeats, so raft-engine's compression gains nothing, as with real commands).
const POOL: usize = 4096;
const ENTRY: usize = 1024;
const PER_ROUND: u64 = 4;

/// The entries every contender writes: per round, per group, 4 entries.
pub struct Load {
    pub groups: u64,
    pub rounds: u64,
    pool: Vec<bytes::Bytes>,
}

impl Load {
    pub fn new(groups: u64, rounds: u64) -> Load {
        let mut rng = Rng(0x5EED_0600 + groups);
        Load {
            groups,
            rounds,
            pool: (0..POOL).map(|_| rng.bytes(ENTRY).into()).collect(),
        }
    }

    /// Group `g`'s entries of round `r` (groups are numbered from 1).
    fn entries(&self, g: u64, r: u64) -> Vec<Entry> {
        (0..PER_ROUND)
            .map(|k| {
                let index = r * PER_ROUND + k + 1;
                let mut e = Entry::default();
                e.index = index;
                e.term = 1;
                // Consecutive in the batch, so no two equal payloads lie within LZ4's window.
                let n = (r * self.groups + g - 1) * PER_ROUND + k;
                e.data = self.pool[(n as usize) % POOL].clone();
                e
            })
            .collect()
    }

    fn hard_state(&self, r: u64) -> HardState {
        let mut hs = HardState::default();
        hs.term = 1;
        hs.vote = 1;
        hs.commit = r * PER_ROUND;
        hs
    }

    fn entries_per_run(&self) -> u64 {
        self.groups * self.rounds * PER_ROUND
    }
}

/// Options for the raftwal engine in the benchmark: the defaults.
fn engine_opts() -> EngineOptions {
    EngineOptions::default()
}

/// Writes the whole load into `root` with the raftwal engine; returns the per-round timings.
fn run_engine(load: &Load, root: &Path) -> (f64, Vec<u64>, Usage) {
    let e = Engine::open_with(root, engine_opts()).expect("engine open");
    for g in 1..=load.groups {
        e.create_group(g, 1).expect("create_group");
    }
    let mut b = WriteBatch::new();
    let r = measured(root, load.rounds as usize, |r| {
        let r = r as u64;
        let hs = load.hard_state(r);
        for g in 1..=load.groups {
            b.save(g, &hs, &load.entries(g, r), &Default::default());
        }
        e.write(&mut b).expect("engine write");
    });
    e.close().expect("close");
    r
}

fn run_raft_engine(load: &Load, root: &Path) -> (f64, Vec<u64>, Usage) {
    let engine = ReEngine::open(engine_cfg(root)).expect("raft-engine open");
    let mut lb = LogBatch::default();
    measured(root, load.rounds as usize, |r| {
        let r = r as u64;
        let hs = load.hard_state(r);
        for g in 1..=load.groups {
            lb.add_entries::<M>(g, &load.entries(g, r))
                .expect("add_entries");
            lb.put_message(g, b"hard_state".to_vec(), &hs)
                .expect("put_message");
        }
        engine.write(&mut lb, true).expect("write");
    })
}

fn run_per_group(load: &Load, root: &Path) -> (f64, Vec<u64>, Usage) {
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let stores: Vec<DiskStorage> = (1..=load.groups)
        .map(|g| DiskStorage::open_with(root.join(g.to_string()), opts.clone()).expect("open"))
        .collect();
    measured(root, load.rounds as usize, |r| {
        let r = r as u64;
        let hs = load.hard_state(r);
        for (i, s) in stores.iter().enumerate() {
            s.save(&hs, &load.entries(i as u64 + 1, r), &Default::default())
                .expect("save");
        }
        for s in &stores {
            s.sync().expect("sync");
        }
    })
}

/// What a run cost the machine: the process's CPU time (every contender's threads are this
/// process's), and the device's bytes written and time busy (`None` where the device's counters
/// cannot be read).
#[derive(Clone, Copy)]
struct Usage {
    wall_s: f64,
    cpu_s: f64,
    device: Option<Device>,
}

/// A block device's counters (Linux's `Documentation/block/stat.rst`), or their growth over a run.
#[derive(Clone, Copy, Default)]
struct Device {
    /// Bytes written.
    bytes: u64,
    /// Milliseconds with I/O in flight.
    busy_ms: u64,
    /// Write requests completed.
    writes: u64,
    /// Milliseconds the write requests waited, summed over requests.
    write_ms: u64,
    /// Flush requests completed (0 where the kernel does not count them).
    flushes: u64,
    /// Milliseconds the flush requests waited, summed.
    flush_ms: u64,
    /// Read requests completed.
    reads: u64,
    /// Bytes read.
    read_bytes: u64,
    /// Milliseconds the read requests waited, summed over requests.
    read_ms: u64,
}

impl Device {
    fn since(self, before: Device) -> Device {
        Device {
            bytes: self.bytes.saturating_sub(before.bytes),
            busy_ms: self.busy_ms.saturating_sub(before.busy_ms),
            writes: self.writes.saturating_sub(before.writes),
            write_ms: self.write_ms.saturating_sub(before.write_ms),
            flushes: self.flushes.saturating_sub(before.flushes),
            flush_ms: self.flush_ms.saturating_sub(before.flush_ms),
            reads: self.reads.saturating_sub(before.reads),
            read_bytes: self.read_bytes.saturating_sub(before.read_bytes),
            read_ms: self.read_ms.saturating_sub(before.read_ms),
        }
    }
}

/// CPU time of the whole process so far (every thread, user and system).
fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The counters so far of the block device holding `dir`.
fn device_counters(dir: &Path) -> Option<Device> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let f: Vec<u64> = stat
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields: reads completed at 0, sectors (512 B) read at 2, read ticks (ms) at 3, writes
    // completed at 4, sectors written at 6, write ticks (ms) at 7, time with I/O in flight (ms)
    // at 9, flushes completed at 15 and flush ticks at 16.
    Some(Device {
        bytes: f.get(6)? * 512,
        busy_ms: *f.get(9)?,
        writes: *f.get(4)?,
        write_ms: *f.get(7)?,
        flushes: f.get(15).copied().unwrap_or(0),
        flush_ms: f.get(16).copied().unwrap_or(0),
        reads: *f.first()?,
        read_bytes: f.get(2)? * 512,
        read_ms: *f.get(3)?,
    })
}

/// `timed_calls`, and what the calls cost the machine.
fn measured(dir: &Path, n: usize, f: impl FnMut(usize)) -> (f64, Vec<u64>, Usage) {
    let (cpu0, dev0) = (cpu_seconds(), device_counters(dir));
    let (secs, lat) = timed_calls(n, f);
    let (cpu1, dev1) = (cpu_seconds(), device_counters(dir));
    let usage = Usage {
        wall_s: secs,
        cpu_s: cpu1 - cpu0,
        device: dev0.zip(dev1).map(|(a, b)| b.since(a)),
    };
    (secs, lat, usage)
}

/// A note of the contenders' median usage per run.
fn usage_note(usages: &[(&'static str, Vec<Usage>)], payload: u64, rounds: u64) -> String {
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let parts: Vec<String> = usages
        .iter()
        .filter(|(_, u)| !u.is_empty())
        .map(|(name, u)| {
            let cores = med(u.iter().map(|u| u.cpu_s / u.wall_s).collect());
            let per_round = med(u.iter().map(|u| u.cpu_s * 1e3 / rounds as f64).collect());
            let mut line = format!("{name} CPU {per_round:.2} ms per round ({cores:.2} cores)");
            if u.iter().all(|u| u.device.is_some()) {
                let dev = |u: &Usage| u.device.unwrap_or_default();
                let written = med(u.iter().map(|u| dev(u).bytes as f64 / payload as f64).collect());
                let busy = med(
                    u.iter()
                        .map(|u| dev(u).busy_ms as f64 / (u.wall_s * 1e3) * 100.0)
                        .collect(),
                );
                let rate = med(
                    u.iter()
                        .map(|u| dev(u).bytes as f64 / u.wall_s / (1 << 20) as f64)
                        .collect(),
                );
                let per = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                let request_kib = med(
                    u.iter()
                        .map(|u| per(dev(u).bytes, dev(u).writes) / 1024.0)
                        .collect(),
                );
                let write_wait = med(u.iter().map(|u| per(dev(u).write_ms, dev(u).writes)).collect());
                let flushes = med(
                    u.iter()
                        .map(|u| dev(u).flushes as f64 / rounds as f64)
                        .collect(),
                );
                let flush_wait = med(u.iter().map(|u| per(dev(u).flush_ms, dev(u).flushes)).collect());
                line += &format!(
                    ", device wrote {written:.2}x the payload ({rate:.0} MiB/s), busy {busy:.0}% of \
                     the run, {request_kib:.0} KiB per write request, {write_wait:.2} ms per write \
                     request, {flushes:.2} flushes per round at {flush_wait:.2} ms"
                );
            }
            line
        })
        .collect();
    format!(
        "per run, medians, while timed (CPU of the whole process; the device's counters include \
         anything else on it): {}",
        parts.join("; ")
    )
}

/// Descriptors this process may open (the soft limit).
fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}

/// Sets the soft descriptor limit (at most the hard one); returns the previous soft limit.
fn set_fd_limit(soft: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let old = r.rlim_cur;
        r.rlim_cur = soft.min(r.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        old
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Allocated bytes under `path` (blocks, as `du` counts them).
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
    }
    total
}

/// One multigroup workload: the contenders alternate over `rounds` runs.
pub fn workload(
    name: &'static str,
    load: &Load,
    runs: usize,
    fd_soft_limit: Option<u64>,
) -> Workload {
    let old = fd_soft_limit.map(set_fd_limit);
    // DiskStorage per group holds 3 descriptors per group (directory lock, meta page, log file).
    let per_group_fits = 3 * load.groups + 64 <= fd_limit();
    let mut contenders = vec![C::Raftwal, C::RaftEngine];
    if per_group_fits {
        contenders.push(C::PerGroup);
    }
    eprintln!(
        "{name}: {} groups x {} rounds x {PER_ROUND} x {ENTRY} B, {} runs{}",
        load.groups,
        load.rounds,
        runs,
        if per_group_fits {
            ""
        } else {
            " (DiskStorage per group left out: not enough descriptors)"
        }
    );
    let mut usages: Vec<(&'static str, Vec<Usage>)> =
        contenders.iter().map(|c| (c.name(), Vec::new())).collect();
    let results = alternate(name, runs, &contenders, |c, round| {
        let dir = tmpdir();
        let (secs, lat, usage) = match c {
            C::Raftwal => run_engine(load, dir.path()),
            C::RaftEngine => run_raft_engine(load, dir.path()),
            C::PerGroup => run_per_group(load, dir.path()),
            other => unreachable!("{:?} is not a multigroup contender", other.name()),
        };
        drop(dir);
        settle();
        // Round 0 is the warm-up, not counted.
        if round > 0 {
            if let Some((_, v)) = usages.iter_mut().find(|(n, _)| *n == c.name()) {
                v.push(usage);
            }
        }
        Run {
            secs,
            entries: load.entries_per_run(),
            ops: load.rounds,
            payload_bytes: load.entries_per_run() * ENTRY as u64,
            lat_ns: lat,
        }
    });
    if let Some(old) = old {
        set_fd_limit(old);
    }
    let mut w = to_workload(
        name,
        format!(
            "{} groups each append {PER_ROUND} x {ENTRY} B per round with a hard state, the round \
             durable before the next; {} rounds per run; latency per round{}",
            load.groups,
            load.rounds,
            fd_soft_limit.map_or(String::new(), |l| format!(
                "; run under a soft limit of {l} descriptors"
            ))
        ),
        &results,
        Some((load.groups * PER_ROUND) as usize),
    );
    w.notes.push(
        "raftwal = Engine, one WriteBatch and one Engine::write per round; raft-engine = one \
         LogBatch per round (entries + hard state per group), write(.., true); \
         disk_storage_per_group = a DiskStorage per group, saves unsynced then one sync() per \
         group per round"
            .to_string(),
    );
    w.notes.push(usage_note(
        &usages,
        load.entries_per_run() * ENTRY as u64,
        load.rounds,
    ));
    w
}

/// The footprint at `load` (N = 1,024 after 50 rounds): written once per contender, then
/// measured (disk, descriptors while open) and reopened in a child process (time, RSS).
/// How long the footprint waits, the engines open and idle, before it measures their disk
/// again: longer than raftwal's checkpoint period (5 s, `PERIOD` in src/engine/checkpoint.rs),
/// so that a checkpoint has trimmed the journal the burst filled.
const IDLE: std::time::Duration = std::time::Duration::from_secs(7);

pub fn footprint(load: &Load) -> Vec<String> {
    let mut lines = Vec::new();
    for c in [C::Raftwal, C::RaftEngine] {
        let dir = tmpdir();
        let root = dir.path().join("root");
        let before = open_fds();
        let held;
        match c {
            C::Raftwal => {
                let e = Engine::open_with(&root, engine_opts()).expect("open");
                for g in 1..=load.groups {
                    e.create_group(g, 1).expect("create_group");
                }
                let mut b = WriteBatch::new();
                let t = Instant::now();
                for r in 0..load.rounds {
                    let hs = load.hard_state(r);
                    for g in 1..=load.groups {
                        b.save(g, &hs, &load.entries(g, r), &Default::default());
                    }
                    e.write(&mut b).expect("write");
                }
                let took = t.elapsed();
                held = open_fds() - before;
                let disk = disk_bytes(&root);
                let journal = disk_bytes(&root.join("journal"));
                lines.push(format!(
                    "raftwal: disk {:.1} MiB while open (journal {:.1} MiB; rounds written in {:.0} ms), {held} descriptors held",
                    disk as f64 / (1 << 20) as f64,
                    journal as f64 / (1 << 20) as f64,
                    took.as_secs_f64() * 1e3
                ));
                // The figure above is the burst's peak: the journal holds every round until a
                // checkpoint has the groups' files durable. Idle, one runs within its period.
                std::thread::sleep(IDLE);
                lines.push(format!(
                    "raftwal: disk {:.1} MiB still open after {} s idle (journal {:.1} MiB)",
                    disk_bytes(&root) as f64 / (1 << 20) as f64,
                    IDLE.as_secs(),
                    disk_bytes(&root.join("journal")) as f64 / (1 << 20) as f64
                ));
                e.close().expect("close");
                lines.push(format!(
                    "raftwal: disk {:.1} MiB after close",
                    disk_bytes(&root) as f64 / (1 << 20) as f64
                ));
            }
            C::RaftEngine => {
                let engine = ReEngine::open(engine_cfg(&root)).expect("open");
                let mut lb = LogBatch::default();
                for r in 0..load.rounds {
                    let hs = load.hard_state(r);
                    for g in 1..=load.groups {
                        lb.add_entries::<M>(g, &load.entries(g, r)).expect("add");
                        lb.put_message(g, b"hard_state".to_vec(), &hs).expect("put");
                    }
                    engine.write(&mut lb, true).expect("write");
                }
                held = open_fds() - before;
                lines.push(format!(
                    "raft-engine: disk {:.1} MiB while open, {held} descriptors held",
                    disk_bytes(&root) as f64 / (1 << 20) as f64
                ));
                std::thread::sleep(IDLE);
                lines.push(format!(
                    "raft-engine: disk {:.1} MiB still open after {} s idle",
                    disk_bytes(&root) as f64 / (1 << 20) as f64,
                    IDLE.as_secs()
                ));
                drop(engine);
                lines.push(format!(
                    "raft-engine: disk {:.1} MiB after close",
                    disk_bytes(&root) as f64 / (1 << 20) as f64
                ));
            }
            _ => unreachable!(),
        }
        settle();
        // Reopen in a child process: a clean measure of time and resident memory. First as the
        // writes left the page cache, then from a cold cache (as after a reboot) where this
        // process may drop it.
        for cold in [false, true] {
            if cold && !drop_page_cache() {
                lines.push(format!(
                    "{}: reopen from a cold cache not measured (dropping the page cache needs root)",
                    c.name()
                ));
                continue;
            }
            let out = std::process::Command::new(std::env::current_exe().expect("current_exe"))
                .arg("--reopen")
                .arg(c.name())
                .arg(&root)
                .arg(load.groups.to_string())
                .output()
                .expect("spawn reopen child");
            lines.push(format!(
                "{}: {}{}",
                c.name(),
                if cold { "cold cache: " } else { "" },
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    }
    lines
}

/// Writes back and drops the page cache (clean pages, dentries, inodes), as a reboot would
/// leave it; false where this process may not.
fn drop_page_cache() -> bool {
    settle();
    std::fs::write("/proc/sys/vm/drop_caches", b"3").is_ok()
}

/// The child of [`footprint`]: reopens `root` with `contender`, reads one entry of every group,
/// and prints the time taken and the resident memory; then closes it (untimed), so that the
/// next reopen (from a cold cache) starts from a closed root as this one did, not from one a
/// process left open.
pub fn reopen_child(contender: &str, root: &Path, groups: u64) {
    let start = device_counters(root);
    let t = Instant::now();
    let now = || (t.elapsed(), device_counters(root));
    match contender {
        "raftwal" => {
            let e = Engine::open_with(root, engine_opts()).expect("reopen");
            let opened = now();
            for g in 1..=groups {
                use raft::Storage;
                let s = e.group(g).expect("group");
                let last = s.last_index().expect("last_index");
                s.term(last).expect("term");
            }
            report(start, opened, now());
            e.close().expect("close after reopen");
        }
        _ => {
            let e = ReEngine::open(engine_cfg(root)).expect("reopen");
            let opened = now();
            for g in 1..=groups {
                let last = e.last_index(g).expect("last_index");
                e.get_entry::<M>(g, last).expect("get_entry");
            }
            report(start, opened, now());
            drop(e);
        }
    }
}

/// Prints the reopen's time and resident memory, and what the device read meanwhile (the
/// read requests, their bytes and mean wait: from a cold cache, what bounds a reopen), open
/// and then the reads of every group's last entry, each as `(elapsed, device counters)`.
fn report(
    start: Option<Device>,
    opened: (std::time::Duration, Option<Device>),
    read: (std::time::Duration, Option<Device>),
) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let reads = |d: Device| {
        format!(
            "{} reads, {} KiB, {:.0} us mean wait",
            d.reads,
            d.read_bytes >> 10,
            d.read_ms as f64 * 1e3 / d.reads.max(1) as f64
        )
    };
    let device = match (start, opened.1, read.1) {
        (Some(a), Some(b), Some(c)) => format!(
            "; device: open {}, the last entries {}",
            reads(b.since(a)),
            reads(c.since(b))
        ),
        _ => String::new(),
    };
    println!(
        "reopen {:.1} ms (and the last entry of every group read: {:.1} ms), resident {} KiB after{device}",
        opened.0.as_secs_f64() * 1e3,
        read.0.as_secs_f64() * 1e3,
        rss
    );
}
