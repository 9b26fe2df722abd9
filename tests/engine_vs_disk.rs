//! Differential test: one group of an `Engine` (`GroupStorage`) against a `DiskStorage`, given
//! the same calls (SPEC §9: a `GroupStorage` has "every rule of §4" and `DiskStorage`'s inherent
//! methods "with the same meaning").
//!
//! Each seed runs a random sequence of steps on a fresh `DiskStorage` directory and, beside it,
//! on group 1 of a fresh engine root: saves (appends, overwrites of an uncommitted suffix with a
//! higher term, hard states, received snapshots with and without entries after them), saves
//! that must fail (gaps, below the first index, non-contiguous, decreasing terms, overwrites of
//! committed entries, a commit past the log, stale snapshots), `create_snapshot` at indexes
//! around the log (with and without a conf state, empty and non-empty data),
//! `truncate_entries_until`, `set_conf_state`, `set_uint`, `sync`, and reopening both (close
//! and open again; sometimes the engine's group directory is also opened with
//! `DiskStorage::open` between, and compared). Entries carry data of many sizes (empty, small,
//! past the journal's by-reference threshold), contexts, and every entry type.
//!
//! After every step everything an outside caller can see is compared: the call's outcome (Ok,
//! or the error's variant and its numbers), `initial_state`, `first_index`, `last_index`,
//! `term(i)` around and across the log, `entries(lo, hi, max_size)` for several windows and
//! limits, `snapshot(request_index, _)`, `num_entries`, `checkpoint` and the meta integers.
//! The engine is opened with a small journal segment and checkpoint threshold in some seeds, so
//! that its background writer moves the groups' tails into their files between steps.
//!
//! Known, documented difference left out of the random steps: `set_uint(MetaInfo::GroupId, _)`
//! is ignored by a `GroupStorage` (its group id is the engine's), not by a `DiskStorage`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage, StorageError};
use raftwal::{DiskStorage, Engine, EngineOptions, Error, GroupStorage, MetaInfo, Options};

#[path = "common/fuzz/mod.rs"]
mod fuzz;

// The inherent calls both stores share, as the fuzz targets compare them.
use fuzz::ops_model::Store;

const SEEDS: u64 = 40;
const STEPS: usize = 250;
const GROUP: u64 = 1;
const RAFT_ID: u64 = 7;

// ---------------------------------------------------------------------------------------------
// randomness
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `[lo, hi]` (`lo` when `hi < lo`).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (k, w) in weights.iter().enumerate() {
            if x < *w {
                return k;
            }
            x -= w;
        }
        weights.len() - 1
    }
    fn bytes(&mut self, n: usize) -> Bytes {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        Bytes::from(v)
    }
}

// ---------------------------------------------------------------------------------------------
// the two stores
// ---------------------------------------------------------------------------------------------

struct Pair {
    disk_dir: PathBuf,
    root: PathBuf,
    disk_opts: Options,
    engine_opts: EngineOptions,
    disk: Option<DiskStorage>,
    engine: Option<Engine>,
    group: Option<GroupStorage>,
}

impl Pair {
    fn new(dir: &Path, sync: bool, small_checkpoints: bool) -> Pair {
        let disk_opts = Options {
            sync_writes: sync,
            ..Options::default()
        };
        let mut engine_opts = EngineOptions {
            sync_writes: sync,
            ..EngineOptions::default()
        };
        if small_checkpoints {
            engine_opts.journal_segment_bytes = 64 << 10;
            engine_opts.checkpoint_bytes = 32 << 10;
        }
        let disk_dir = dir.join("disk");
        let root = dir.join("engine");
        let disk = DiskStorage::open_with(&disk_dir, disk_opts.clone()).unwrap();
        disk.set_uint(MetaInfo::RaftId, RAFT_ID);
        disk.set_uint(MetaInfo::GroupId, GROUP);
        let engine = Engine::open_with(&root, engine_opts.clone()).unwrap();
        let group = engine.create_group(GROUP, RAFT_ID).unwrap();
        Pair {
            disk_dir,
            root,
            disk_opts,
            engine_opts,
            disk: Some(disk),
            engine: Some(engine),
            group: Some(group),
        }
    }

    fn d(&self) -> &DiskStorage {
        self.disk.as_ref().unwrap()
    }

    fn g(&self) -> &GroupStorage {
        self.group.as_ref().unwrap()
    }

    /// Closes both and opens them again. With `via_disk`, the engine's group directory is also
    /// opened with `DiskStorage::open` while the engine is closed, and compared with the disk
    /// side (SPEC §9: after a clean close it holds the group's full state).
    fn reopen(&mut self, via_disk: bool) -> Result<(), String> {
        self.disk
            .take()
            .unwrap()
            .close()
            .map_err(|e| format!("disk close: {e}"))?;
        drop(self.group.take());
        self.engine
            .take()
            .unwrap()
            .close()
            .map_err(|e| format!("engine close: {e}"))?;
        let disk = DiskStorage::open_with(&self.disk_dir, self.disk_opts.clone())
            .map_err(|e| format!("disk open: {e}"))?;
        if via_disk {
            let dir = self.root.join("groups").join(GROUP.to_string());
            let as_disk = DiskStorage::open_with(&dir, self.disk_opts.clone())
                .map_err(|e| format!("group dir open as DiskStorage: {e}"))?;
            let r = compare(&disk, &as_disk, &mut Rng(1));
            as_disk
                .close()
                .map_err(|e| format!("group dir close: {e}"))?;
            r.map_err(|e| format!("group dir opened as DiskStorage: {e}"))?;
        }
        let engine = Engine::open_with(&self.root, self.engine_opts.clone())
            .map_err(|e| format!("engine open: {e}"))?;
        let group = engine
            .group(GROUP)
            .ok_or_else(|| "engine reopened without group".to_string())?;
        // Every entry is in the group's files after a clean close: the same files.
        let (nd, ng) = (disk.num_log_files(), group.num_log_files());
        if nd != ng {
            return Err(format!(
                "num_log_files after reopen:\n    disk:   {nd}\n    engine: {ng}"
            ));
        }
        self.disk = Some(disk);
        self.engine = Some(engine);
        self.group = Some(group);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// outcomes
// ---------------------------------------------------------------------------------------------

/// A raftwal error as an outside tester compares it: the variant, with its numbers for the
/// variants that hold only numbers (their messages hold no path).
fn err_kind(e: &Error) -> String {
    match e {
        Error::Compacted { .. }
        | Error::Unavailable { .. }
        | Error::SnapshotOutOfDate { .. }
        | Error::SnapshotTemporarilyUnavailable { .. } => format!("{e:?}"),
        other => {
            let s = format!("{other:?}");
            let end = s.find([' ', '(', '{']).unwrap_or(s.len());
            s[..end].to_string()
        }
    }
}

/// The `StorageError` kind as the fuzz targets name it, a raftwal error inside `Other` by
/// [`err_kind`] (its message holds a path that differs between the stores).
fn raft_kind(e: &raft::Error) -> String {
    match e {
        raft::Error::Store(StorageError::Other(b)) => match b.downcast_ref::<Error>() {
            Some(e) => format!("Other({})", err_kind(e)),
            None => format!("Other({b})"),
        },
        other => fuzz::ops_model::kind_of(other),
    }
}

fn outcome(r: &Result<(), Error>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => format!("Err({})", err_kind(e)),
    }
}

fn show<T: std::fmt::Debug>(r: &raft::Result<T>) -> String {
    match r {
        Ok(v) => {
            let s = format!("Ok({v:?})");
            if s.len() > 400 {
                format!("{}... ({} chars)", &s[..400], s.len())
            } else {
                s
            }
        }
        Err(e) => format!("Err({})", raft_kind(e)),
    }
}

/// Observes `a` and `b` with the same queries (chosen from `a`'s indexes) and returns the
/// first observation that differs.
fn compare<A: Store, B: Store>(a: &A, b: &B, r: &mut Rng) -> Result<(), String> {
    let mut checks: Vec<(String, String, String)> = Vec::new();
    let mut push = |what: String, x: String, y: String| checks.push((what, x, y));
    let is = |x: raft::Result<RaftState>| x.map(|s| (s.hard_state, s.conf_state));
    push(
        "initial_state".into(),
        show(&is(a.initial_state())),
        show(&is(b.initial_state())),
    );
    let fa = a.first_index();
    let la = a.last_index();
    push("first_index".into(), show(&fa), show(&b.first_index()));
    push("last_index".into(), show(&la), show(&b.last_index()));
    push(
        "num_entries".into(),
        a.num_entries().to_string(),
        b.num_entries().to_string(),
    );
    for key in [
        MetaInfo::RaftId,
        MetaInfo::GroupId,
        MetaInfo::CheckpointIndex,
        MetaInfo::SnapshotIndex,
        MetaInfo::SnapshotTerm,
    ] {
        push(
            format!("uint({key:?})"),
            a.uint(key).to_string(),
            b.uint(key).to_string(),
        );
    }
    push(
        "checkpoint".into(),
        format!("{:?}", a.checkpoint().map_err(|e| err_kind(&e))),
        format!("{:?}", b.checkpoint().map_err(|e| err_kind(&e))),
    );
    let (first, last) = (fa.unwrap_or(1), la.unwrap_or(0));
    // term(i) across [first-2, last+2]: every index of a short log, else edges and samples.
    let lo = first.saturating_sub(2);
    let hi = last + 2;
    let mut idxs: Vec<u64> = if hi - lo <= 300 {
        (lo..=hi).collect()
    } else {
        let mut v: Vec<u64> = (lo..lo + 60).chain(hi - 60..=hi).collect();
        v.extend((0..60).map(|_| r.range(lo, hi)));
        v
    };
    idxs.push(0);
    idxs.push(u64::MAX);
    for i in idxs {
        push(format!("term({i})"), show(&a.term(i)), show(&b.term(i)));
    }
    // entries windows
    let mut windows: Vec<(u64, u64)> =
        vec![(first, last + 1), (first, first), (last + 1, last + 1)];
    if last + 1 - first <= 400 {
        windows.push((first, last + 1));
    }
    windows.push((first.saturating_sub(1), last + 1));
    windows.push((first, last + 2));
    for _ in 0..6 {
        let l = r.range(first.saturating_sub(1), last + 1);
        let h = r.range(l, (l + 40).min(last + 2));
        windows.push((l, h));
    }
    if last >= first {
        windows.push((last, last.saturating_sub(1))); // low > high
    }
    windows.push((first, u64::MAX));
    windows.push((u64::MAX, u64::MAX));
    for (l, h) in windows {
        // Reads of a long log are kept short (windows past its end read nothing).
        let h = if h <= last + 1 && h > l.saturating_add(2000) {
            l + 2000
        } else {
            h
        };
        let limits: [Option<u64>; 6] = [
            None,
            Some(0),
            Some(1),
            Some(r.below(400)),
            Some(r.below(20_000)),
            Some(u64::MAX),
        ];
        for m in limits {
            let ctx = GetEntriesContext::empty(false);
            let ea = a.entries(l, h, m, ctx);
            let ctx = GetEntriesContext::empty(false);
            let eb = b.entries(l, h, m, ctx);
            let same = match (&ea, &eb) {
                (Ok(x), Ok(y)) => x == y,
                (Err(x), Err(y)) => raft_kind(x) == raft_kind(y),
                _ => false,
            };
            if !same {
                let brief = |e: &raft::Result<Vec<Entry>>| match e {
                    Ok(v) => {
                        let mut s = format!("Ok({} entries:", v.len());
                        for en in v.iter().take(12) {
                            let _ = write!(
                                s,
                                " [{} t{} {:?} d{} c{}]",
                                en.index,
                                en.term,
                                en.get_entry_type(),
                                en.data.len(),
                                en.context.len()
                            );
                        }
                        s.push(')');
                        s
                    }
                    Err(e) => format!("Err({})", raft_kind(e)),
                };
                push(format!("entries({l}, {h}, {m:?})"), brief(&ea), brief(&eb));
            }
        }
    }
    // snapshot(request_index, to)
    let si = a.uint(MetaInfo::SnapshotIndex);
    for req in [0, si, si + 1, last, last + 1] {
        let sn = |s: raft::Result<Snapshot>| s.map(|s| (s.get_metadata().clone(), s.data));
        push(
            format!("snapshot({req}, 0)"),
            show(&sn(a.snapshot(req, 0))),
            show(&sn(b.snapshot(req, 0))),
        );
    }
    for (what, x, y) in checks {
        if x != y {
            return Err(format!("{what}:\n    disk:   {x}\n    engine: {y}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// steps
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Save {
        hs: HardState,
        entries: Vec<Entry>,
        snap: Snapshot,
        why: &'static str,
    },
    CreateSnapshot {
        index: u64,
        cs: Option<ConfState>,
        data: Bytes,
    },
    /// `create_snapshot_from` with a reader that fails after `data`.
    CreateSnapshotFailing {
        index: u64,
        data: Bytes,
    },
    Truncate(u64),
    SetConfState(ConfState),
    SetUint(MetaInfo, u64),
    Sync,
    Reopen {
        via_disk: bool,
    },
}

fn describe(s: &Step) -> String {
    match s {
        Step::Save {
            hs,
            entries,
            snap,
            why,
        } => {
            let mut out = format!("save[{why}] hs=(t{} v{} c{})", hs.term, hs.vote, hs.commit);
            if let (Some(a), Some(b)) = (entries.first(), entries.last()) {
                let _ = write!(out, " entries {}..={} terms", a.index, b.index);
                let mut terms: Vec<u64> = entries.iter().map(|e| e.term).collect();
                terms.dedup();
                let _ = write!(out, " {terms:?}");
                if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
                    let idx: Vec<u64> = entries.iter().map(|e| e.index).collect();
                    let _ = write!(out, " idx {idx:?}");
                }
            }
            let md = snap.get_metadata();
            if md.index > 0 {
                let _ = write!(
                    out,
                    " snap(i{} t{} voters {:?} data {})",
                    md.index,
                    md.term,
                    md.get_conf_state().voters,
                    snap.data.len()
                );
            }
            out
        }
        Step::CreateSnapshot { index, cs, data } => format!(
            "create_snapshot({index}, {:?}, {} bytes)",
            cs.as_ref().map(|c| c.voters.clone()),
            data.len()
        ),
        other => format!("{other:?}"),
    }
}

/// A reader that yields its bytes, then fails.
struct Failing<'a>(&'a [u8]);

impl std::io::Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() {
            return Err(std::io::Error::other("the application's reader failed"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// What the generator needs of the current log (read from the disk side).
struct View {
    first: u64,
    last: u64,
    last_term: u64,
    snap_index: u64,
    hs: HardState,
    /// The log's files start at `grid + 1`, `grid + 30_001`, ... (0 until a received snapshot
    /// restarts the log at its index).
    grid: u64,
}

fn view(s: &DiskStorage, grid: u64) -> View {
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    let snap_index = s.uint(MetaInfo::SnapshotIndex);
    View {
        first,
        last,
        last_term: s.term(last).unwrap_or(0),
        snap_index,
        hs: s.initial_state().unwrap().hard_state,
        grid,
    }
}

fn gen_cs(r: &mut Rng) -> ConfState {
    let mut cs = ConfState::default();
    let n = r.range(1, 4);
    cs.voters = (1..=n).map(|k| k * 10 + r.below(3)).collect();
    if r.chance(30) {
        cs.learners = vec![100 + r.below(5)];
    }
    if r.chance(10) {
        cs.voters_outgoing = vec![1, 2];
        cs.learners_next = vec![200];
        cs.auto_leave = r.chance(50);
    }
    cs
}

fn gen_entry(r: &mut Rng, index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    let len = match r.pick(&[20, 50, 20, 8, 2]) {
        0 => 0,
        1 => r.range(1, 64),
        2 => r.range(64, 600),
        3 => r.range(600, 5000),
        _ => r.range(20_000, 70_000),
    } as usize;
    e.data = r.bytes(len);
    if r.chance(25) {
        let n = if r.chance(10) {
            r.range(500, 1500)
        } else {
            r.range(1, 40)
        };
        e.context = r.bytes(n as usize);
    }
    e.set_entry_type(match r.pick(&[85, 10, 5]) {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        _ => EntryType::EntryConfChangeV2,
    });
    static SYNC_LOG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let sync_log =
        *SYNC_LOG.get_or_init(|| std::env::var_os("ENGINE_VS_DISK_NO_SYNC_LOG").is_none());
    if sync_log && r.chance(5) {
        e.sync_log = true;
    }
    e
}

fn gen_entries(r: &mut Rng, start: u64, n: usize, term: u64) -> Vec<Entry> {
    let mut t = term;
    (0..n as u64)
        .map(|k| {
            if k > 0 && r.chance(3) {
                t += 1;
            }
            gen_entry(r, start + k, t)
        })
        .collect()
}

fn gen_count(r: &mut Rng) -> usize {
    match r.pick(&[70, 25, 5]) {
        0 => r.range(1, 8) as usize,
        1 => r.range(9, 60) as usize,
        _ => r.range(200, 600) as usize,
    }
}

/// A hard state for a log ending at `new_last` (a valid commit unless `bad`).
fn gen_hs(r: &mut Rng, v: &View, term: u64, new_last: u64, bad: bool) -> HardState {
    let mut hs = HardState::default();
    hs.term = term.max(v.hs.term);
    hs.vote = r.below(4);
    hs.commit = if bad {
        new_last + r.range(1, 3)
    } else if r.chance(80) {
        r.range(v.hs.commit.min(new_last), new_last)
    } else {
        r.range(0, new_last)
    };
    hs
}

/// Files hold 30,000 entries each: an index next to the end of one of the files the log has
/// (`v.grid`), else one in the log.
fn near_boundary(r: &mut Rng, v: &View) -> u64 {
    const PER_FILE: u64 = 30_000;
    let base = v.grid;
    let files = v.last.saturating_sub(base) / PER_FILE;
    if files == 0 {
        return r.range(v.first, v.last);
    }
    let k = r.range(1, files);
    (base + k * PER_FILE + r.below(3)).saturating_sub(1)
}

fn gen_step(r: &mut Rng, v: &View) -> Step {
    let top_term = v.last_term.max(v.hs.term);
    let none = HardState::default;
    let nosnap = Snapshot::default;
    match r.pick(&[
        30, // 0 append
        8,  // 1 overwrite
        3,  // 2 overwrite committed (error)
        3,  // 3 gap (error)
        2,  // 4 below first (error)
        2,  // 5 not contiguous (error)
        2,  // 6 decreasing term (error)
        2,  // 7 commit past the log (error)
        6,  // 8 received snapshot
        2,  // 9 stale snapshot (error)
        8,  // 10 create_snapshot
        5,  // 11 truncate
        3,  // 12 set_conf_state
        3,  // 13 set_uint
        5,  // 14 hard state only
        2,  // 15 sync
        4,  // 16 reopen
        1,  // 17 snapshot near the largest index
        1,  // 18 create_snapshot_from a reader that fails
        1,  // 19 empty save
    ]) {
        0 => {
            let n = gen_count(r);
            let term = top_term + u64::from(r.chance(20));
            let entries = gen_entries(r, v.last + 1, n, term.max(1));
            let new_last = v.last + n as u64;
            let hs = if r.chance(60) {
                gen_hs(r, v, entries.last().unwrap().term, new_last, false)
            } else {
                none()
            };
            Step::Save {
                hs,
                entries,
                snap: nosnap(),
                why: "append",
            }
        }
        1 => {
            let lo = v.first.max(v.hs.commit + 1);
            if lo > v.last {
                return gen_step(r, v);
            }
            let start = r.range(lo, v.last);
            let n = r.range(1, 10) as usize;
            let term = top_term + r.range(1, 2);
            let entries = gen_entries(r, start, n, term);
            let new_last = start + n as u64 - 1;
            let hs = if r.chance(50) {
                gen_hs(r, v, term, new_last, false)
            } else {
                none()
            };
            Step::Save {
                hs,
                entries,
                snap: nosnap(),
                why: "overwrite",
            }
        }
        2 => {
            if v.hs.commit < v.first || v.first > v.last {
                return gen_step(r, v);
            }
            let start = r.range(v.first, v.hs.commit.min(v.last));
            Step::Save {
                hs: none(),
                entries: gen_entries(r, start, 3, top_term + 1),
                snap: nosnap(),
                why: "overwrite committed",
            }
        }
        3 => Step::Save {
            hs: none(),
            entries: {
                let start = v.last + r.range(2, 4);
                gen_entries(r, start, 2, top_term.max(1))
            },
            snap: nosnap(),
            why: "gap",
        },
        4 => Step::Save {
            hs: none(),
            entries: gen_entries(r, v.first - 1, 2, top_term.max(1)),
            snap: nosnap(),
            why: "below first",
        },
        5 => {
            let mut es = gen_entries(r, v.last + 1, 3, top_term.max(1));
            es[2].index += 1;
            Step::Save {
                hs: none(),
                entries: es,
                snap: nosnap(),
                why: "not contiguous",
            }
        }
        6 => {
            let t = top_term.max(2);
            let mut es = gen_entries(r, v.last + 1, 3, t);
            if v.last_term > 0 && r.chance(50) {
                for e in es.iter_mut() {
                    e.term = v.last_term - 1;
                }
            } else {
                es[2].term = t - 1;
                es[1].term = t;
            }
            Step::Save {
                hs: none(),
                entries: es,
                snap: nosnap(),
                why: "decreasing term",
            }
        }
        7 => {
            let n = r.range(0, 3) as usize;
            let entries = gen_entries(r, v.last + 1, n, top_term.max(1));
            let new_last = v.last + n as u64;
            Step::Save {
                hs: gen_hs(r, v, top_term, new_last, true),
                entries,
                snap: nosnap(),
                why: "commit past log",
            }
        }
        8 => {
            let index = v.snap_index + 1 + r.below(v.last.saturating_sub(v.snap_index) + 5);
            let term = top_term.max(1) + r.below(2);
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = term;
            snap.mut_metadata().set_conf_state(gen_cs(r));
            let dl = if r.chance(25) {
                0
            } else {
                r.range(1, 3000) as usize
            };
            snap.data = r.bytes(dl);
            let n = if r.chance(50) {
                r.range(1, 12) as usize
            } else {
                0
            };
            let start = if r.chance(90) { index + 1 } else { index + 2 };
            let eterm = term + r.below(2);
            let entries = gen_entries(r, start, n, eterm);
            let new_last = if n > 0 { start + n as u64 - 1 } else { index };
            let hs = if r.chance(60) {
                let mut hs = gen_hs(r, v, term, new_last, false);
                hs.commit = r.range(index.min(new_last), new_last);
                hs
            } else {
                none()
            };
            Step::Save {
                hs,
                entries,
                snap,
                why: "snapshot",
            }
        }
        9 => {
            let index = r.range(1, v.snap_index.max(1));
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = r.range(1, top_term.max(1));
            snap.mut_metadata().set_conf_state(gen_cs(r));
            let dl = r.below(100) as usize;
            snap.data = r.bytes(dl);
            Step::Save {
                hs: none(),
                entries: vec![],
                snap,
                why: "stale snapshot",
            }
        }
        10 => {
            let index = match r.pick(&[6, 2, 1, 1, 2]) {
                0 => r.range(v.first, v.last),
                1 => v.last,
                2 => v.first.saturating_sub(r.range(1, 2)),
                3 => v.last + r.range(1, 2),
                _ => near_boundary(r, v),
            };
            let cs = r.chance(50).then(|| gen_cs(r));
            let dl = if r.chance(25) {
                0
            } else {
                r.range(1, 3000) as usize
            };
            Step::CreateSnapshot {
                index,
                cs,
                data: r.bytes(dl),
            }
        }
        11 => Step::Truncate(match r.pick(&[6, 1, 1, 1, 1]) {
            0 => r.range(v.first, v.last + 1),
            1 => v.first.saturating_sub(r.below(3)),
            2 => v.last + r.range(1, 3),
            3 => near_boundary(r, v),
            _ => r.next(),
        }),
        12 => Step::SetConfState(gen_cs(r)),
        13 => {
            let key = match r.pick(&[2, 4, 1, 1]) {
                0 => MetaInfo::RaftId,
                1 => MetaInfo::CheckpointIndex,
                2 => MetaInfo::SnapshotIndex,
                _ => MetaInfo::SnapshotTerm,
            };
            Step::SetUint(key, r.below(v.last + 5))
        }
        14 => {
            let hs = if r.chance(10) {
                none()
            } else {
                let t = top_term + r.below(2);
                gen_hs(r, v, t, v.last, false)
            };
            Step::Save {
                hs,
                entries: vec![],
                snap: nosnap(),
                why: "hard state",
            }
        }
        15 => Step::Sync,
        16 => Step::Reopen {
            via_disk: r.chance(30),
        },
        18 => Step::CreateSnapshotFailing {
            index: r.range(v.first, v.last),
            data: {
                let n = r.below(5000) as usize;
                r.bytes(n)
            },
        },
        17 => {
            // A received snapshot near (or past) the largest index the log holds, 2^62.
            let index = match r.pick(&[3, 1, 1]) {
                0 => (1u64 << 62) - r.below(12),
                1 => (1u64 << 62) + r.below(2),
                _ => u64::MAX - r.below(2),
            };
            // Rare: a log there stays there, and most saves after it are refused.
            if index <= v.snap_index || !r.chance(15) {
                return gen_step(r, v);
            }
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = top_term.max(1);
            snap.mut_metadata().set_conf_state(gen_cs(r));
            snap.data = r.bytes(10);
            let n = if index < u64::MAX - 10 {
                r.below(4) as usize
            } else {
                0
            };
            let entries = gen_entries(r, index.saturating_add(1), n, top_term.max(1));
            Step::Save {
                hs: none(),
                entries,
                snap,
                why: "snapshot near 2^62",
            }
        }
        _ => Step::Save {
            hs: none(),
            entries: vec![],
            snap: nosnap(),
            why: "empty",
        },
    }
}

/// Runs `step` on both; the outcomes must be the same. Returns the outcome.
fn run(p: &mut Pair, step: &Step) -> Result<String, String> {
    let (a, b) = match step {
        Step::Save {
            hs, entries, snap, ..
        } => (p.d().save(hs, entries, snap), p.g().save(hs, entries, snap)),
        Step::CreateSnapshot { index, cs, data } => (
            p.d().create_snapshot(*index, cs.as_ref(), data.clone()),
            p.g().create_snapshot(*index, cs.as_ref(), data.clone()),
        ),
        Step::CreateSnapshotFailing { index, data } => (
            p.d().create_snapshot_from(*index, None, Failing(&data[..])),
            p.g().create_snapshot_from(*index, None, Failing(&data[..])),
        ),
        Step::Truncate(i) => (
            p.d().truncate_entries_until(*i),
            p.g().truncate_entries_until(*i),
        ),
        Step::SetConfState(cs) => (p.d().set_conf_state(cs), p.g().set_conf_state(cs)),
        Step::SetUint(k, v) => {
            p.d().set_uint(*k, *v);
            p.g().set_uint(*k, *v);
            (Ok(()), Ok(()))
        }
        Step::Sync => (p.d().sync(), p.g().sync()),
        Step::Reopen { via_disk } => {
            p.reopen(*via_disk)?;
            (Ok(()), Ok(()))
        }
    };
    let (a, b) = (outcome(&a), outcome(&b));
    if a != b {
        return Err(format!("outcome:\n    disk:   {a}\n    engine: {b}"));
    }
    Ok(a)
}

type Tally = std::collections::BTreeMap<String, usize>;

fn run_seed(
    seed: u64,
    steps: usize,
    bulk: u64,
    tally: &mut Tally,
) -> Result<(usize, usize), String> {
    let dir = tempfile::Builder::new()
        .prefix("engine-vs-disk-")
        .tempdir_in(scratch())
        .unwrap();
    let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD1B5_4A32_D192_ED03);
    let sync = seed % 3 != 2;
    let small = seed % 2 == 1;
    let mut p = Pair::new(dir.path(), sync, small);
    let mut history: Vec<String> = Vec::new();
    // A long log first (tiny entries), so that the steps cross a 30,000-entry file boundary.
    let mut next = 1;
    while next <= bulk {
        let n = (bulk + 1 - next).min(2000);
        let es: Vec<Entry> = (next..next + n)
            .map(|i| {
                let mut e = Entry::default();
                (e.index, e.term) = (i, 1);
                let n = r.below(8) as usize;
                e.data = r.bytes(n);
                e
            })
            .collect();
        let hs = HardState::default();
        run(
            &mut p,
            &Step::Save {
                hs,
                entries: es,
                snap: Snapshot::default(),
                why: "bulk",
            },
        )
        .map_err(|e| format!("seed {seed}: bulk append: {e}"))?;
        next += n;
    }
    if bulk > 0 {
        history.push(format!("bulk append 1..={bulk} (term 1)"));
        compare(p.d(), p.g(), &mut Rng(seed))
            .map_err(|e| format!("seed {seed}: after bulk: {e}"))?;
    }
    let mut reopens = 0;
    let mut max_files = 0;
    let mut grid = 0;
    let mut check_rng = Rng(seed ^ 0x5555);
    for k in 0..steps {
        let v = view(p.d(), grid);
        if bulk > 0 {
            max_files = max_files.max(p.d().num_log_files());
        }
        let step = gen_step(&mut r, &v);
        if matches!(step, Step::Reopen { .. }) {
            reopens += 1;
        }
        history.push(describe(&step));
        let res = run(&mut p, &step).and_then(|o| {
            let name = match &step {
                Step::Save { why, .. } => format!("save[{why}]"),
                Step::CreateSnapshot { .. } => "create_snapshot".into(),
                Step::CreateSnapshotFailing { .. } => "create_snapshot_from(failing)".into(),
                Step::Truncate(_) => "truncate".into(),
                Step::SetConfState(_) => "set_conf_state".into(),
                Step::SetUint(..) => "set_uint".into(),
                Step::Sync => "sync".into(),
                Step::Reopen { .. } => "reopen".into(),
            };
            if let Step::Save { snap, .. } = &step {
                if o == "Ok" && snap.get_metadata().index > 0 {
                    grid = snap.get_metadata().index;
                }
            }
            let o = o.split(['{', '(']).take(2).collect::<Vec<_>>().join("(");
            *tally.entry(format!("{name} -> {o}")).or_default() += 1;
            compare(p.d(), p.g(), &mut check_rng)
        });
        if let Err(e) = res {
            let from = history.len().saturating_sub(25);
            let mut msg = format!(
                "seed {seed} (sync_writes {sync}, small checkpoints {small}), step {k}: {}\n{e}\n\
                 last steps:\n",
                describe(&step)
            );
            for (i, h) in history[from..].iter().enumerate() {
                let _ = writeln!(msg, "  {:>4} {h}", from + i);
            }
            return Err(msg);
        }
    }
    if bulk > 0 {
        eprintln!("seed {seed}: at most {max_files} log files");
    }
    p.reopen(true)
        .and_then(|_| compare(p.d(), p.g(), &mut check_rng))
        .map_err(|e| format!("seed {seed}, final reopen: {e}"))?;
    Ok((steps, reopens + 1))
}

fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// `ENGINE_VS_DISK_SEEDS=A..B`: run seeds `A..B` instead of the fixed ones.
fn seed_range() -> Option<(u64, u64)> {
    let s = std::env::var("ENGINE_VS_DISK_SEEDS").ok()?;
    let (a, b) = s.split_once("..")?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[test]
fn group_storage_behaves_as_disk_storage() {
    let only: Option<u64> = std::env::var("ENGINE_VS_DISK_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let steps: usize = std::env::var("ENGINE_VS_DISK_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS);
    let (from, count) = seed_range().map_or((0, SEEDS), |(a, b)| (a, b.saturating_sub(a)));
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (from..from + count).collect(),
    };
    let start = std::time::Instant::now();
    let (mut total_steps, mut total_reopens) = (0, 0);
    let mut failures = Vec::new();
    let mut tally = Tally::new();
    for seed in seeds {
        match run_seed(seed, steps, 0, &mut tally) {
            Ok((s, re)) => {
                total_steps += s;
                total_reopens += re;
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "engine_vs_disk: {total_steps} steps, {total_reopens} reopens in {:?}; {} failing seeds",
        start.elapsed(),
        failures.len()
    );
    if std::env::var_os("ENGINE_VS_DISK_TALLY").is_some() {
        for (k, n) in &tally {
            eprintln!("  {n:>6}  {k}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// divergences found, reduced
// ---------------------------------------------------------------------------------------------

/// An entry saved with raft-proto's (deprecated) `sync_log` flag set reads back without it from
/// a `DiskStorage` (the format has no place for it), and from a group once the engine has
/// written it to the group's files or replayed it at open; but a group's tail (entries
/// journaled, not yet in the files) handed it back as given. The answer of `entries()` then
/// depended on when the background writer ran: the entry differed, and so did its
/// `compute_size()`, so a `max_size` limit cut the same window at another place.
#[test]
fn a_sync_log_flag_reads_back_as_from_disk_storage() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskStorage::open(dir.path().join("disk")).unwrap();
    let engine = Engine::open(dir.path().join("engine")).unwrap();
    let group = engine.create_group(GROUP, RAFT_ID).unwrap();
    let entry = |index: u64| {
        let mut e = Entry::default();
        (e.index, e.term) = (index, 1);
        e.data = Bytes::from(vec![7u8; 100]);
        e.sync_log = true;
        e
    };
    let es = [entry(1), entry(2)];
    let hs = HardState::default();
    disk.save(&hs, &es, &Snapshot::default()).unwrap();
    group.save(&hs, &es, &Snapshot::default()).unwrap();
    let ctx = GetEntriesContext::empty(false);
    let from_disk = disk.entries(1, 3, None, ctx).unwrap();
    assert!(from_disk.iter().all(|e| !e.sync_log));
    // The limit holds the first entry as it is stored, and not both.
    let limit = u64::from(protobuf::Message::compute_size(&from_disk[0])) + 1;
    for max_size in [None, Some(limit)] {
        let ctx = GetEntriesContext::empty(false);
        let from_disk = disk.entries(1, 3, max_size, ctx).unwrap();
        let ctx = GetEntriesContext::empty(false);
        let from_group = group.entries(1, 3, max_size, ctx).unwrap();
        assert_eq!(from_group, from_disk, "entries(1, 3, {max_size:?})");
    }
}

/// The same steps on a log that starts about 30,000 (or 60,000) entries long: overwrites,
/// snapshots, truncations and reopens across the boundaries between a group's `.wal` files.
#[test]
fn group_storage_behaves_as_disk_storage_across_a_file_boundary() {
    let mut tally = Tally::new();
    let mut failures = Vec::new();
    let mut cases = vec![
        (1000, 29_995),
        (1001, 30_010),
        (1002, 29_990),
        (1003, 60_005),
    ];
    if let Some((a, b)) = seed_range() {
        cases = (a..b).map(|s| (s, 29_980 + s % 40)).collect();
    }
    for (seed, bulk) in cases {
        if let Err(e) = run_seed(seed, 150, bulk, &mut tally) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
