//! Power loss (docs/DESIGN.md §4 "write order gives safety" and "Sync policy", §6; docs/FORMAT.md
//! "Recovery"). SIGKILL (tests/sigkill.rs) keeps the page cache; a power loss keeps only what
//! reached the disk. This test records every flush the engine makes, builds the directories a
//! power loss at any instant can leave behind, and opens each of them.
//!
//! # Recording the flush points
//!
//! This test binary defines `fdatasync` and `fsync` itself. The engine flushes through
//! `File::sync_data` / `File::sync_all`, which call those libc symbols, and a symbol defined in the
//! executable takes precedence over the C library's, so every flush the engine makes passes
//! through [`fdatasync`] / [`fsync`] below, which (only on a thread that is recording an
//! operation, and only for the directory under test) read every file of the directory through
//! the page cache — the content about to be flushed — and then make the real system call. A
//! recorded operation therefore yields its exact sequence of flushes: which file (or the
//! directory) and what the page cache held at each. Nothing in the engine is changed or hooked.
//! (If the engine ever flushed through another path, a synced `save` would show unflushed data
//! when it returns, which the test reports.)
//!
//! # The power-loss model
//!
//! Per file, the disk holds the content of the file's last completed flush; every version the page
//! cache held since then (as read at the flush points and when an operation returns) may have been
//! written back, page by page, in any order. A power loss at an instant keeps, for every 4 KiB page
//! of every file, the page as in any one of those versions, independently of the other pages (and
//! since a disk only promises that a 512-byte sector is written whole, some mixes are built per
//! sector). Directory entries are durable after a directory `fsync` (not before: a created file
//! may be missing, or present with the length 0 it was created with; a removed file may still be
//! there, whole); a file's length may be that of any of its versions (bytes past it are gone);
//! pages never written read as zero (files are `fallocate`d). Each such combination is a *mix*.
//! A power loss *during* flush `k` leaves the state after flushes `1..k-1` plus any mix of what is
//! pending, which also covers every instant before flush `k` began.
//!
//! The mixes, at each flush point of each operation and after each operation returned:
//! the all-old and all-new extremes (opened in both recovery modes), then random ones: uniform,
//! biased towards old or new pages, and "in order" (a prefix of the pages in file order new, or
//! the reverse). They are seeded (deterministic) and deduplicated (two mixes building the same
//! directory count once).
//!
//! # What every mix must give (`check_dir`)
//!
//! Opened with `DiskStorage::open` (default `TolerateTailCorruption`):
//!
//! * open succeeds;
//! * the log is a prefix of one of the logs the directory was meant to hold since the last
//!   acknowledged point (the acknowledged one, or one the operations in flight were writing) —
//!   never altered data, never pieces of two different logs — and it holds at least their longest
//!   common prefix: every entry acknowledged survives unless an operation in flight overwrites it
//!   (then the entries below the overwrite survive);
//! * the hard state is one of theirs, `commit <= last_index`, and it goes with the log: a hard
//!   state the engine stores only after its whole log was flushed (a synced `save`, `sync()`)
//!   comes with that whole log, never with less of it or with an older log (`Accept`);
//! * every entry read back is at its position (index `i` where `i` was asked for) and
//!   byte-identical (index, term, type, data, context), and `term(i)` agrees with the log for
//!   every entry read.
//!
//! Every few mixes the recovered store also takes a synced append and is reopened in
//! `AbsoluteConsistency`: recovery must leave a directory that stays clean afterwards.
//!
//! # The synced protocol (`power_loss_synced_saves`)
//!
//! One store with `Options::default()` (`sync_writes: true`) runs a script of `save`s: appends of
//! every size (with contexts and all entry types), hard-state-only and entries-only saves,
//! overwrites of a suffix with a higher term (within a file, across files, from a file's first
//! slot), and appends across the 30,000-entry file boundary. A `save` that returned is
//! acknowledged. The store's protocol (src/store/storage/ `save`) flushes the cut of an
//! overwrite, then the log, and only then writes and flushes the meta page, so a mix never
//! combines the new hard state with unflushed log pages: at every flush point of a `save`, a
//! mix giving its new hard state must give its whole new log (the old hard state goes with any
//! acceptable log).
//! Should anything be left unflushed when a `save` returns, the mixes after it must give exactly
//! what it was given.
//!
//! # The unsynced protocol (`power_loss_unsynced_batches`)
//!
//! One store with `sync_writes: false` runs batches of `save`s, each batch ended by `sync()`; only
//! what a completed `sync()` covered is acknowledged, but the directory must open to a valid
//! prefix after a power loss at any instant. Only the hard state a `sync()` stores is paired with
//! its whole log (an unsynced `save` does not write the meta page). Inside a `save` that
//! overwrites, the page cache holds the cut slots zeroed before the new ones are written
//! (docs/FORMAT.md "Overwrite"); that version is derived from the layout and added to the cut
//! file's versions (a synced `save` flushes it, so there it is recorded).
//!
//! # Negative controls
//!
//! Directories the synced protocol never leaves are built by hand and must be rejected, so that
//! the checks are known to catch what they look for: the meta page of a `save` (commit 145) with
//! the log pages from before it (last index 140) — what writing the meta page before the log's
//! flush completed could leave; the same for an overwrite whose new commit index (155) lies inside
//! the old log (only the pairing catches it); an overwrite whose cut is lost (old slot pages kept,
//! the new entries' later slot pages on disk: old entries then new ones, a log no node ever had)
//! — what flushing the cut before the new entries rules out; and a synced slot page lost
//! (acknowledged entries missing).
//!
//! Every violation is collected (operation, flush point, mix strategy, which pages or sectors came
//! from which version, what open or a read returned) and the test fails at the end listing them.

// Linux: the flush hook resolves file descriptors through /proc/self/fd.
#![cfg(target_os = "linux")]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use raft::prelude::*;
use raft::{Storage, StorageError};
use raftwal::{DiskStorage, Options, RecoveryMode};

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;

use entries::ctx;
use layout::{log_name, slot_at, META_FILE, SLOTS_PER_FILE, SLOT_AREA_LEN};

// ---------------------------------------------------------------------------------------------
// layout (docs/FORMAT.md: tests/common/layout.rs) and granularity
// ---------------------------------------------------------------------------------------------

const PAGE: usize = 4096;
const SECTOR: usize = 512;
static ZEROES: [u8; PAGE] = [0; PAGE];

/// The log file holding `index` (no snapshots here: file 1 starts at index 1).
fn file_of(index: u64) -> u64 {
    1 + (index - 1) / SLOTS_PER_FILE
}

/// The slot of `index` in its file.
fn slot_of(index: u64) -> u64 {
    (index - 1) % SLOTS_PER_FILE
}

// ---------------------------------------------------------------------------------------------
// the flush hook
// ---------------------------------------------------------------------------------------------

type Files = BTreeMap<String, Arc<Vec<u8>>>;

/// One flush the engine made.
struct Flush {
    /// `fdatasync` or `fsync`.
    call: &'static str,
    /// The file flushed, or `None` for the directory itself.
    target: Option<String>,
    /// Every file of the directory as the page cache held it when the flush began.
    files: Files,
}

/// What a recording thread collects.
struct Recorder {
    dir: PathBuf,
    flushes: Vec<Flush>,
    error: Option<String>,
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
    /// A failure of the flush hook itself (a panic in it, or the recorder out of reach), kept
    /// until [`record`] or [`check_hook`] reports it: a flush point must never drop out silently.
    static HOOK_FAILURE: Cell<Option<String>> = const { Cell::new(None) };
}

fn on_flush(call: &'static str, fd: libc::c_int) {
    let r = catch_unwind(|| {
        RECORDER.with(|r| {
            let Ok(mut r) = r.try_borrow_mut() else {
                return Err(format!(
                    "{call}(fd {fd}): the recorder was borrowed when the flush came"
                ));
            };
            let Some(rec) = r.as_mut() else {
                return Ok(());
            };
            let Ok(path) = fs::read_link(format!("/proc/self/fd/{fd}")) else {
                rec.error = Some(format!("readlink of fd {fd} failed"));
                return Ok(());
            };
            let target = if path == rec.dir {
                None
            } else if path.parent() == Some(rec.dir.as_path()) {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
            } else {
                return Ok(());
            };
            match try_capture(&rec.dir) {
                Ok(files) => rec.flushes.push(Flush {
                    call,
                    target,
                    files,
                }),
                Err(e) => rec.error = Some(e),
            }
            Ok(())
        })
    });
    let failure = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(p) => format!("{call}(fd {fd}) panicked: {}", panic_message(&*p)),
    };
    // Keep the first failure; a flush outside `record` is reported by the next check.
    HOOK_FAILURE.with(|f| {
        let first = f.take();
        f.set(Some(first.unwrap_or(failure)));
    });
}

/// Panics if the flush hook failed since the last check (see [`HOOK_FAILURE`]).
fn check_hook(when: &str) {
    if let Some(e) = HOOK_FAILURE.with(Cell::take) {
        panic!("the flush hook failed ({when}), so a flush point may be missing: {e}");
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// `fdatasync(2)`, seen by the recorder first. Takes precedence over the C library's symbol in
/// this executable (see the module documentation).
#[no_mangle]
pub extern "C" fn fdatasync(fd: libc::c_int) -> libc::c_int {
    on_flush("fdatasync", fd);
    // SAFETY: the raw system call with the caller's file descriptor, as the libc wrapper makes it.
    unsafe { libc::syscall(libc::SYS_fdatasync, fd) as libc::c_int }
}

/// `fsync(2)`, seen by the recorder first.
#[no_mangle]
pub extern "C" fn fsync(fd: libc::c_int) -> libc::c_int {
    on_flush("fsync", fd);
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_fsync, fd) as libc::c_int }
}

/// Runs `op` with the flushes it makes in `dir` recorded; returns its result, the flushes, and the
/// directory when it returned.
fn record<T>(dir: &Path, op: impl FnOnce() -> T) -> (T, Vec<Flush>, Files) {
    let dir = fs::canonicalize(dir).expect("canonicalize");
    check_hook("before an operation was recorded");
    RECORDER.with(|r| {
        *r.borrow_mut() = Some(Recorder {
            dir: dir.clone(),
            flushes: Vec::new(),
            error: None,
        })
    });
    let out = op();
    let rec = RECORDER
        .with(|r| r.borrow_mut().take())
        .expect("the recorder");
    check_hook("while an operation was recorded");
    if let Some(e) = rec.error {
        panic!("the flush recorder failed: {e}");
    }
    (out, rec.flushes, capture(&dir))
}

/// Every regular file but `LOCK`, read through the page cache.
fn try_capture(dir: &Path) -> Result<Files, String> {
    let mut files = BTreeMap::new();
    let rd = fs::read_dir(dir).map_err(|e| format!("read_dir: {e}"))?;
    for ent in rd {
        let ent = ent.map_err(|e| format!("directory entry: {e}"))?;
        let name = ent
            .file_name()
            .into_string()
            .map_err(|n| format!("file name {n:?}"))?;
        if name == "LOCK" {
            continue;
        }
        if !ent.file_type().map_err(|e| e.to_string())?.is_file() {
            return Err(format!(
                "unexpected {name} in the WAL directory (this test takes no snapshots)"
            ));
        }
        let data = fs::read(ent.path()).map_err(|e| format!("read {name}: {e}"))?;
        files.insert(name, Arc::new(data));
    }
    Ok(files)
}

fn capture(dir: &Path) -> Files {
    try_capture(dir).unwrap_or_else(|e| panic!("capture {}: {e}", dir.display()))
}

// ---------------------------------------------------------------------------------------------
// deterministic randomness and entries
// ---------------------------------------------------------------------------------------------

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0.wrapping_mul(0xA076_1D64_78BD_642F))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

/// Bytes from a cheap generator (the test runs in debug mode: no per-byte hashing).
fn bytes_from(seed: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = splitmix(seed) | 1;
    while out.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

#[derive(Clone, Copy, Debug)]
enum Size {
    /// 0–8 bytes, rarely a context (for the 30,000-entry files).
    Tiny,
    /// 0–47 bytes, contexts.
    Small,
    /// Sizes around page boundaries (0, 1, 100, 4095, 4097, 9000), contexts up to 6,000 bytes.
    Mixed,
    /// 5,000–75,000 bytes: payloads spanning many pages.
    Big,
}

/// A deterministic entry; all three entry types occur.
fn make_entry(index: u64, term: u64, size: Size) -> Entry {
    let h = splitmix(index ^ term.rotate_left(40) ^ (size as u64).rotate_left(20));
    let (len, ctx) = match size {
        Size::Tiny => ((h % 9) as usize, if h.is_multiple_of(101) { 3 } else { 0 }),
        Size::Small => (
            (h % 48) as usize,
            if h.is_multiple_of(3) {
                1 + (h >> 8) % 40
            } else {
                0
            },
        ),
        Size::Mixed => (
            [0, 1, 100, 4095, 4097, 9000][(h % 6) as usize],
            [0, 0, 7, 6000][((h >> 8) % 4) as usize],
        ),
        Size::Big => (
            5_000 + ((h >> 4) % 70_000) as usize,
            if h.is_multiple_of(4) { 33 } else { 0 },
        ),
    };
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.entry_type = match (h >> 16) % 31 {
        0 => EntryType::EntryConfChange,
        1 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    };
    e.data = bytes_from(h, len);
    e.context = bytes_from(!h, ctx as usize);
    e
}

fn make_entries(lo: u64, hi: u64, term: u64, size: Size) -> Vec<Entry> {
    (lo..=hi).map(|i| make_entry(i, term, size)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

fn same_entry(a: &Entry, b: &Entry) -> bool {
    a.index == b.index
        && a.term == b.term
        && a.get_entry_type() == b.get_entry_type()
        && a.data == b.data
        && a.context == b.context
}

fn show_entry(e: &Entry) -> String {
    format!(
        "{{index {}, term {}, {:?}, data {} B, context {} B}}",
        e.index,
        e.term,
        e.get_entry_type(),
        e.data.len(),
        e.context.len()
    )
}

fn show_hs(hs: &HardState) -> String {
    format!("(term {}, vote {}, commit {})", hs.term, hs.vote, hs.commit)
}

fn synced(mode: RecoveryMode) -> Options {
    Options {
        recovery_mode: mode,
        ..Default::default()
    }
}

fn unsynced() -> Options {
    Options {
        sync_writes: false,
        ..Default::default()
    }
}

/// `log` after `save(_, entries, _)`: entries from the first one's index on are replaced.
fn apply_entries(log: &[Entry], entries: &[Entry]) -> Vec<Entry> {
    let mut out = log.to_vec();
    if let Some(e) = entries.first() {
        out.truncate(e.index as usize - 1);
        out.extend(entries.iter().cloned());
    }
    out
}

/// Length of the longest common prefix of `logs`.
fn common_prefix(logs: &[&[Entry]]) -> u64 {
    let mut n = logs.iter().map(|l| l.len()).min().unwrap_or(0);
    for l in &logs[1..] {
        let a = logs[0];
        let mut k = 0;
        while k < n && same_entry(&a[k], &l[k]) {
            k += 1;
        }
        n = k;
    }
    n as u64
}

// ---------------------------------------------------------------------------------------------
// what the disk may hold
// ---------------------------------------------------------------------------------------------

/// One content of a file, named by when it was read.
#[derive(Clone)]
struct Ver {
    label: String,
    data: Arc<Vec<u8>>,
}

/// A file's durable content and the versions the page cache held since.
#[derive(Clone)]
struct Track {
    /// As of the file's last completed flush; `None` if it was never flushed (read as empty).
    durable: Option<Ver>,
    pending: Vec<Ver>,
}

impl Track {
    fn latest(&self) -> Option<&Arc<Vec<u8>>> {
        self.pending
            .last()
            .or(self.durable.as_ref())
            .map(|v| &v.data)
    }

    /// Oldest first: the durable content (or an empty file), then the pending versions.
    fn versions(&self) -> Vec<Ver> {
        let first = match &self.durable {
            Some(v) => Ver {
                label: format!("{} [durable]", v.label),
                data: v.data.clone(),
            },
            None => Ver {
                label: "nothing flushed [durable]".to_string(),
                data: Arc::new(Vec::new()),
            },
        };
        std::iter::once(first)
            .chain(self.pending.iter().cloned())
            .collect()
    }
}

/// The files of the directory under test: what is durable, what is pending.
struct Disk {
    /// Files in the directory now.
    live: BTreeMap<String, Track>,
    /// Names whose directory entry is durable (as of the last directory fsync).
    named: BTreeSet<String>,
    /// Files removed since the last directory fsync (their entry may still be on disk).
    removed: BTreeMap<String, Track>,
}

fn same_data(a: &Arc<Vec<u8>>, b: &Arc<Vec<u8>>) -> bool {
    Arc::ptr_eq(a, b) || a[..] == b[..]
}

impl Disk {
    /// Everything in `files` durable.
    fn durable(files: &Files, label: &str) -> Disk {
        Disk {
            live: files
                .iter()
                .map(|(n, d)| {
                    let v = Ver {
                        label: label.to_string(),
                        data: d.clone(),
                    };
                    (
                        n.clone(),
                        Track {
                            durable: Some(v),
                            pending: Vec::new(),
                        },
                    )
                })
                .collect(),
            named: files.keys().cloned().collect(),
            removed: BTreeMap::new(),
        }
    }

    /// The page cache holds `files` now.
    fn observe(&mut self, files: &Files, label: &str) {
        for (name, data) in files {
            let ver = Ver {
                label: label.to_string(),
                data: data.clone(),
            };
            match self.live.get_mut(name) {
                Some(t) => {
                    if !t.latest().is_some_and(|l| same_data(l, data)) {
                        t.pending.push(ver);
                    }
                }
                None => {
                    assert!(
                        !self.removed.contains_key(name),
                        "{name} was created again before its removal was durable: the model \
                         does not cover that"
                    );
                    self.live.insert(
                        name.clone(),
                        Track {
                            durable: None,
                            pending: vec![ver],
                        },
                    );
                }
            }
        }
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            let t = self.live.remove(&n).expect("live file");
            if self.named.contains(&n) {
                self.removed.insert(n, t);
            }
        }
    }

    /// A version of `name` the page cache held that no read saw (see the unsynced test).
    fn add_pending(&mut self, name: &str, ver: Ver) {
        self.live
            .get_mut(name)
            .unwrap_or_else(|| panic!("{name} is not in the directory"))
            .pending
            .push(ver);
    }

    /// A flush completed.
    fn flushed(&mut self, target: &Option<String>) {
        match target {
            Some(name) => {
                if let Some(t) = self.live.get_mut(name) {
                    if let Some(v) = t.pending.pop() {
                        t.durable = Some(v);
                    }
                    t.pending.clear();
                }
            }
            None => {
                self.named = self.live.keys().cloned().collect();
                self.removed.clear();
            }
        }
    }

    /// Something is not durable.
    fn pending(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .live
            .iter()
            .filter(|(_, t)| !t.pending.is_empty())
            .map(|(n, _)| format!("{n} (unflushed writes)"))
            .collect();
        out.extend(
            self.live
                .keys()
                .filter(|n| !self.named.contains(*n))
                .map(|n| format!("{n} (created, directory not synced)")),
        );
        out.extend(
            self.removed
                .keys()
                .map(|n| format!("{n} (removed, directory not synced)")),
        );
        out
    }

    /// The choices a power loss now has, file by file.
    fn candidates(&self) -> Vec<FileCands> {
        let live = self.live.iter().map(|(name, t)| {
            let absent = (!self.named.contains(name)).then_some(Absent::Oldest);
            FileCands::of(name, t, absent)
        });
        let removed = self
            .removed
            .iter()
            .map(|(name, t)| FileCands::of(name, t, Some(Absent::Newest)));
        let mut out: Vec<FileCands> = live.chain(removed).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Where "no such file" goes among a file's presence options when its directory entry is not
/// durable: before its versions (created since the last directory fsync) or after them (removed).
#[derive(Clone, Copy)]
enum Absent {
    Oldest,
    Newest,
}

/// One file's choices: its versions (oldest first) and its presence and length options (`None`:
/// absent; oldest first, the current state last).
struct FileCands {
    name: String,
    versions: Vec<Ver>,
    presence: Vec<Option<usize>>,
}

impl FileCands {
    /// `t`'s versions, each a presence option with its length, and `absent` if the file's
    /// directory entry may be missing.
    fn of(name: &str, t: &Track, absent: Option<Absent>) -> FileCands {
        let versions = t.versions();
        let mut presence: Vec<Option<usize>> =
            versions.iter().map(|v| Some(v.data.len())).collect();
        match absent {
            Some(Absent::Oldest) => presence.insert(0, None),
            Some(Absent::Newest) => presence.push(None),
            None => {}
        }
        FileCands {
            name: name.to_string(),
            versions,
            presence,
        }
    }
}

/// Whole-directory versions as choices (for the hand-built negative controls).
fn cands_of(dirs: &[(&str, &Files)]) -> Vec<FileCands> {
    let mut names: Vec<&String> = dirs.iter().flat_map(|(_, f)| f.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let versions: Vec<Ver> = dirs
                .iter()
                .map(|(l, f)| Ver {
                    label: l.to_string(),
                    data: f.get(name).cloned().unwrap_or_else(|| Arc::new(Vec::new())),
                })
                .collect();
            let presence = dirs
                .iter()
                .map(|(_, f)| f.get(name).map(|d| d.len()))
                .collect();
            FileCands {
                name: name.clone(),
                versions,
                presence,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// mixes
// ---------------------------------------------------------------------------------------------

/// What a directory may hold after a power loss at one instant, and what it must give.
struct CrashPoint {
    label: String,
    files: Vec<FileCands>,
    accept: Accept,
    budget: usize,
}

/// One state the directory was meant to hold: a log and the hard state that goes with it.
#[derive(Clone)]
struct State {
    name: String,
    log: Arc<Vec<Entry>>,
    hs: HardState,
    /// The engine stores `hs` in the meta page only after the whole of `log` was flushed
    /// (docs/DESIGN.md write order), so a directory giving `hs` must give all of `log`. When
    /// `false`, `hs` may sit with any of the logs (it was durable before the operation, or see the
    /// unsynced test).
    whole_log: bool,
}

/// The states the directory was meant to hold since the last acknowledged point (the
/// acknowledged one first). A recovered hard state that some unpaired state has goes with a
/// prefix of any of the logs; one that only paired states (`whole_log`) have goes only with the
/// whole log of one of them.
#[derive(Clone)]
struct Accept {
    states: Vec<State>,
    /// Entries `1..=floor` must survive: the common prefix of the logs.
    floor: u64,
}

impl Accept {
    /// No state paired.
    fn new(states: &[(String, Arc<Vec<Entry>>, HardState)]) -> Accept {
        let logs: Vec<&[Entry]> = states.iter().map(|(_, l, _)| &l[..]).collect();
        Accept {
            floor: common_prefix(&logs),
            states: states
                .iter()
                .map(|(n, l, h)| State {
                    name: n.clone(),
                    log: l.clone(),
                    hs: h.clone(),
                    whole_log: false,
                })
                .collect(),
        }
    }

    /// The last state paired: its hard state reaches the meta page only after its whole log is
    /// flushed.
    fn paired_last(mut self) -> Accept {
        self.states.last_mut().expect("a state").whole_log = true;
        self
    }
}

struct Block {
    off: usize,
    len: usize,
    unit: usize,
    /// Per version: the first version with the same bytes here.
    canon: Vec<u8>,
}

struct FilePlan {
    /// The unit choosing presence and length, when the options differ.
    presence: Option<usize>,
    blocks: Vec<Block>,
}

/// The independent units of a crash point at one granularity.
struct Plan {
    gran: usize,
    files: Vec<FilePlan>,
    units: usize,
}

/// Bytes `[off, off + len)` of two contents are the same (bytes past the end read as zero).
fn segment_eq(a: &[u8], b: &[u8], off: usize, len: usize) -> bool {
    fn part(d: &[u8], off: usize, len: usize) -> &[u8] {
        if off < d.len() {
            &d[off..(off + len).min(d.len())]
        } else {
            &[]
        }
    }
    let (sa, sb) = (part(a, off, len), part(b, off, len));
    let n = sa.len().min(sb.len());
    let rest = if sa.len() > n { &sa[n..] } else { &sb[n..] };
    sa[..n] == sb[..n] && rest.chunks(PAGE).all(|c| c == &ZEROES[..c.len()])
}

fn plan(files: &[FileCands], gran: usize) -> Plan {
    let mut units = 0;
    let mut plans = Vec::new();
    for f in files {
        let presence = if f.presence.iter().all(|p| *p == f.presence[0]) {
            None
        } else {
            units += 1;
            Some(units - 1)
        };
        let max_len = f.versions.iter().map(|v| v.data.len()).max().unwrap_or(0);
        let mut blocks = Vec::new();
        let mut off = 0;
        while off < max_len {
            let len = gran.min(max_len - off);
            let canon: Vec<u8> = (0..f.versions.len())
                .map(|v| {
                    (0..v)
                        .find(|&u| {
                            same_data(&f.versions[u].data, &f.versions[v].data)
                                || segment_eq(&f.versions[u].data, &f.versions[v].data, off, len)
                        })
                        .unwrap_or(v) as u8
                })
                .collect();
            if canon.iter().any(|&c| c != 0) {
                blocks.push(Block {
                    off,
                    len,
                    unit: units,
                    canon,
                });
                units += 1;
            }
            off += len;
        }
        plans.push(FilePlan { presence, blocks });
    }
    Plan {
        gran,
        files: plans,
        units,
    }
}

#[derive(Clone, Copy, Debug)]
enum Strategy {
    /// Every unit as it was at the last completed flush.
    AllOld,
    /// Every unit as the page cache holds it now.
    AllNew,
    /// Each unit from a uniformly chosen option.
    Uniform,
    /// Each unit new (a uniformly chosen later option) with probability `p`, else old.
    Biased { p: f64 },
    /// Units (in file and offset order) before position `t` new and the rest old, or (`rev`) the
    /// other way round: write-back in order, or the later pages first.
    Ordered { t: usize, rev: bool },
}

fn choose(cp: &CrashPoint, plan: &Plan, s: Strategy, rng: &mut Rng) -> Vec<u8> {
    let mut c = vec![0u8; plan.units];
    let mut pos = 0usize;
    let pick = |k: usize, pos: usize, rng: &mut Rng| -> u8 {
        let newer = |rng: &mut Rng| 1 + rng.below(k as u64 - 1) as usize;
        (match s {
            _ if k <= 1 => 0,
            Strategy::AllOld => 0,
            Strategy::AllNew => k - 1,
            Strategy::Uniform => rng.below(k as u64) as usize,
            Strategy::Biased { p } => {
                if rng.chance(p) {
                    newer(rng)
                } else {
                    0
                }
            }
            Strategy::Ordered { t, rev } => {
                if (pos < t) != rev {
                    k - 1
                } else {
                    0
                }
            }
        }) as u8
    };
    for (f, fp) in cp.files.iter().zip(&plan.files) {
        if let Some(u) = fp.presence {
            c[u] = pick(f.presence.len(), pos, rng);
            pos += 1;
        }
        for b in &fp.blocks {
            c[b.unit] = pick(f.versions.len(), pos, rng);
            pos += 1;
        }
    }
    c
}

fn chosen_len(f: &FileCands, fp: &FilePlan, choice: &[u8]) -> Option<usize> {
    match fp.presence {
        None => f.presence[0],
        Some(u) => f.presence[choice[u] as usize],
    }
}

/// A key naming the directory a choice builds (equal keys, equal directories), in terms of the
/// sector plan whatever the granularity of the choice: a page-level mix and the same mix built
/// sector by sector count once.
fn mix_key(cp: &CrashPoint, plans: &[Plan; 2], which: usize, choice: &[u8]) -> Vec<u8> {
    let mut key = Vec::new();
    for (fi, f) in cp.files.iter().enumerate() {
        let len = chosen_len(f, &plans[which].files[fi], choice);
        key.extend_from_slice(&len.map_or(u64::MAX, |l| l as u64).to_le_bytes());
        let Some(len) = len else { continue };
        let fp = &plans[0].files[fi];
        let mut pi = 0;
        for b in plans[1].files[fi].blocks.iter().filter(|b| b.off < len) {
            let v = if which == 1 {
                choice[b.unit] as usize
            } else {
                // The version of the page holding this sector (a page that is not a unit is the
                // same in every version).
                while pi < fp.blocks.len() && fp.blocks[pi].off + fp.blocks[pi].len <= b.off {
                    pi += 1;
                }
                match fp.blocks.get(pi) {
                    Some(pb) if pb.off <= b.off => choice[pb.unit] as usize,
                    _ => 0,
                }
            };
            key.push(b.canon[v]);
        }
    }
    key
}

/// Writes the mix into `dir` (emptied first), sparse: zero pages are holes.
fn materialize(dir: &Path, files: &[FileCands], plan: &Plan, choice: &[u8]) {
    if dir.exists() {
        fs::remove_dir_all(dir).expect("empty the scratch directory");
    }
    fs::create_dir_all(dir).expect("create the scratch directory");
    for (f, fp) in files.iter().zip(&plan.files) {
        let Some(len) = chosen_len(f, fp, choice) else {
            continue;
        };
        let mut buf = vec![0u8; len];
        // Outside the units every version has the same bytes (or zeroes past its end).
        if let Some(src) = f.versions.iter().map(|v| &v.data).max_by_key(|d| d.len()) {
            let k = len.min(src.len());
            buf[..k].copy_from_slice(&src[..k]);
        }
        for b in fp.blocks.iter().filter(|b| b.off < len) {
            let dst = &mut buf[b.off..(b.off + b.len).min(len)];
            let src = &f.versions[choice[b.unit] as usize].data;
            let k = src.len().saturating_sub(b.off).min(dst.len());
            if k > 0 {
                dst[..k].copy_from_slice(&src[b.off..b.off + k]);
            }
            dst[k..].fill(0);
        }
        let path = dir.join(&f.name);
        let file = fs::File::create(&path).expect("create a mixed file");
        file.set_len(len as u64).expect("set_len");
        for (p, chunk) in buf.chunks(PAGE).enumerate() {
            if chunk != &ZEROES[..chunk.len()] {
                file.write_all_at(chunk, (p * PAGE) as u64)
                    .expect("write a mixed page");
            }
        }
    }
}

/// Which units came from which version, by file, in ranges of blocks.
fn describe(files: &[FileCands], plan: &Plan, choice: &[u8]) -> String {
    let unit_name = if plan.gran == PAGE { "page" } else { "sector" };
    let mut parts = Vec::new();
    for (f, fp) in files.iter().zip(&plan.files) {
        let len = chosen_len(f, fp, choice);
        let mut s = format!("{}: ", f.name);
        let Some(len) = len else {
            s += "absent";
            parts.push(s);
            continue;
        };
        s += &format!("length {len}");
        if fp.presence.is_some() {
            let opts: Vec<String> = f
                .presence
                .iter()
                .map(|p| p.map_or("absent".to_string(), |l| l.to_string()))
                .collect();
            s += &format!(" (of {})", opts.join("/"));
        }
        let mut by: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for b in fp.blocks.iter().filter(|b| b.off < len) {
            let i = b.off / plan.gran;
            let ranges = by.entry(choice[b.unit] as usize).or_default();
            match ranges.last_mut() {
                Some(r) if r.1 + 1 == i => r.1 = i,
                _ => ranges.push((i, i)),
            }
        }
        if by.is_empty() {
            s += ", no differing blocks";
        }
        for (v, ranges) in by {
            let list: Vec<String> = ranges
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        format!("{a}")
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            s += &format!(
                "; {unit_name}s as at {}: {}",
                f.versions[v].label,
                list.join(",")
            );
        }
        parts.push(s);
    }
    parts.join(" | ")
}

// ---------------------------------------------------------------------------------------------
// checking one directory
// ---------------------------------------------------------------------------------------------

/// A mix is read in full from `WINDOW` entries below the common prefix of the logs to its end, and
/// sampled below that. The entries of the common prefix have the same bytes in every version (a
/// payload byte is never rewritten, and their slots are not touched), so a mix cannot change them;
/// the sample, and the full reads of the all-old and all-new extremes, guard against recovery
/// misreading them.
const WINDOW: u64 = 300;

/// Reads `[lo, hi]` from the store.
fn read_range(s: &DiskStorage, lo: u64, hi: u64) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut at = lo;
    while at <= hi {
        let end = (at + 8_192).min(hi + 1);
        let got = s
            .entries(at, end, None, ctx())
            .map_err(|e| format!("open succeeded, then entries({at}, {end}) failed: {e:?}"))?;
        if got.len() as u64 != end - at {
            return Err(format!(
                "entries({at}, {end}) returned {} entries",
                got.len()
            ));
        }
        // Position, not the entry's word for it: the checks below index the expected logs by
        // `e.index`, so an entry read at the wrong position must not get that far.
        if let Some((j, e)) = got
            .iter()
            .enumerate()
            .find(|(j, e)| e.index != at + *j as u64)
        {
            return Err(format!(
                "entries({at}, {end}) returned {} at position {} (index {} expected)",
                show_entry(e),
                j,
                at + j as u64
            ));
        }
        out.extend(got);
        at = end;
    }
    Ok(out)
}

/// Opens `dir` and checks it against `accept`. `full`: every entry is read (else the window above
/// the common prefix and a sample below it). Returns the store on success.
fn check_dir(
    dir: &Path,
    accept: &Accept,
    mode: RecoveryMode,
    full: bool,
) -> Result<DiskStorage, String> {
    let s = DiskStorage::open_with(dir, synced(mode)).map_err(|e| format!("open failed: {e}"))?;
    let first = s.first_index().map_err(|e| format!("first_index: {e:?}"))?;
    let last = s.last_index().map_err(|e| format!("last_index: {e:?}"))?;
    if first != 1 {
        return Err(format!(
            "first_index {first}, want 1 (no snapshot was taken)"
        ));
    }
    let hs = s
        .initial_state()
        .map_err(|e| format!("initial_state: {e:?}"))?
        .hard_state;
    if hs.commit > last {
        return Err(format!(
            "the hard state {} commits past the last index {last}",
            show_hs(&hs)
        ));
    }
    let with_hs: Vec<&State> = accept.states.iter().filter(|st| st.hs == hs).collect();
    if with_hs.is_empty() {
        let known: Vec<String> = accept
            .states
            .iter()
            .map(|st| format!("{} {}", st.name, show_hs(&st.hs)))
            .collect();
        return Err(format!(
            "hard state {} is none of the expected ({})",
            show_hs(&hs),
            known.join(", ")
        ));
    }
    // The hard state and the log are judged together: a hard state only paired states have was
    // stored after their whole log was flushed, so it goes with nothing less.
    let whole = with_hs.iter().all(|st| st.whole_log);
    let cands: Vec<&State> = if whole {
        with_hs
    } else {
        accept.states.iter().collect()
    };
    let floor = accept.floor;
    let lo = if full {
        1
    } else {
        floor.min(last).saturating_sub(WINDOW).max(1)
    };
    // `read_range` checked that every entry's index is its position.
    let mut got = read_range(&s, lo, last)?;
    let mut i = 1;
    while i < lo {
        got.extend(read_range(&s, i, i)?);
        i += 997;
    }
    if lo > 1 {
        got.extend(read_range(&s, lo - 1, lo - 1)?);
    }
    let long_enough = |l: &[Entry]| {
        if whole {
            l.len() as u64 == last
        } else {
            l.len() as u64 >= last
        }
    };
    let prefix_of =
        |l: &[Entry]| long_enough(l) && got.iter().all(|e| same_entry(e, &l[e.index as usize - 1]));
    let Some(matched) = cands.iter().find(|st| prefix_of(&st.log)) else {
        let why: Vec<String> = cands
            .iter()
            .map(|st| {
                let (n, l) = (&st.name, &st.log);
                if !long_enough(l) {
                    return format!("{n} has {} entries", l.len());
                }
                match got
                    .iter()
                    .find(|e| !same_entry(e, &l[e.index as usize - 1]))
                {
                    Some(e) => format!(
                        "{n} differs at {}: got {}, {n} has {}",
                        e.index,
                        show_entry(e),
                        show_entry(&l[e.index as usize - 1])
                    ),
                    None => format!("{n} matches"),
                }
            })
            .collect();
        if whole {
            return Err(format!(
                "the hard state {} was stored only after the whole log of {} was flushed, but \
                 the log [1, {last}] is not all of it: {}",
                show_hs(&hs),
                cands
                    .iter()
                    .map(|st| st.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                why.join("; ")
            ));
        }
        return Err(format!(
            "the log [1, {last}] is not a prefix of any expected log: {}",
            why.join("; ")
        ));
    };
    let name = &matched.name;
    if last < floor {
        return Err(format!(
            "acknowledged entries lost: the log ends at {last} (a prefix of {name}), but every \
             entry up to {floor} was acknowledged and not being overwritten"
        ));
    }
    // Every entry read: `term(i)` against the matched log at position `i`.
    for e in &got {
        let want = matched.log[e.index as usize - 1].term;
        if s.term(e.index).ok() != Some(want) {
            return Err(format!(
                "term({}) is {:?}, {name} has {want} there",
                e.index,
                s.term(e.index),
            ));
        }
    }
    match s.term(last + 1) {
        Err(raft::Error::Store(StorageError::Unavailable)) => {}
        other => return Err(format!("term(last + 1 = {}) gave {other:?}", last + 1)),
    }
    Ok(s)
}

/// After recovery, the store takes a synced append and reopens clean in `AbsoluteConsistency`.
fn check_continue(dir: &Path, s: DiskStorage) -> Result<(), String> {
    let last = s.last_index().map_err(|e| format!("last_index: {e:?}"))?;
    let hs = s
        .initial_state()
        .map_err(|e| format!("initial_state: {e:?}"))?
        .hard_state;
    let last_term = s.term(last).map_err(|e| format!("term({last}): {e:?}"))?;
    let more = make_entries(
        last + 1,
        last + 3,
        last_term.max(hs.term).max(1),
        Size::Mixed,
    );
    s.save(&HardState::default(), &more, &Snapshot::default())
        .map_err(|e| format!("recovered, then a synced append failed: {e}"))?;
    s.close()
        .map_err(|e| format!("close after recovery: {e}"))?;
    let s =
        DiskStorage::open_with(dir, synced(RecoveryMode::AbsoluteConsistency)).map_err(|e| {
            format!("recovered and appended, then reopening in AbsoluteConsistency failed: {e}")
        })?;
    let got = read_range(&s, last + 1, last + 3)?;
    if s.last_index().ok() != Some(last + 3)
        || !got.iter().zip(&more).all(|(a, b)| same_entry(a, b))
    {
        return Err(format!(
            "recovered and appended [{}, {}], then the reopened log ends at {:?} or differs",
            last + 1,
            last + 3,
            s.last_index()
        ));
    }
    Ok(())
}

fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
    }
}

// ---------------------------------------------------------------------------------------------
// running crash points
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    mixes: usize,
    extremes: usize,
    continued: usize,
    failures: Vec<String>,
    per_point: Vec<(String, usize, usize)>,
}

impl Tally {
    fn fail(&mut self, msg: String) {
        eprintln!("FAILURE: {msg}\n");
        self.failures.push(msg);
    }

    /// Reports, fails on any violation, then checks that the random phase still mixes:
    /// `min_mixes` is a floor under the (deterministic) number of distinct random mixes checked.
    fn finish(&self, what: &str, started: Instant, min_mixes: usize) {
        check_hook("at the end of the test");
        eprintln!("---- {what}: mixes checked and failures, per crash point ----");
        for (label, n, f) in &self.per_point {
            eprintln!("{n:5} {f:4}  {label}");
        }
        eprintln!(
            "{what}: {} distinct mixed states checked (+ {} extremes opened in both modes, {} \
             recoveries continued), {} failures, {:.1?}",
            self.mixes,
            self.extremes,
            self.continued,
            self.failures.len(),
            started.elapsed()
        );
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(20).map(|s| s.as_str()).collect();
            panic!(
                "{what}: {} of {} power-loss states violate the contract; the first {}:\n\n{}",
                self.failures.len(),
                self.mixes + self.extremes,
                shown.len(),
                shown.join("\n\n")
            );
        }
        assert!(
            self.mixes >= min_mixes,
            "{what}: only {} distinct random mixes were checked, fewer than the floor {min_mixes} \
             (about half of what the script gives): the random phase (Disk::observe, plan, choose \
             or the deduplication) has lost coverage and mostly opens the all-old and all-new \
             extremes",
            self.mixes
        );
    }
}

/// Checks the crash point's mixes: both extremes in both modes, then random ones.
fn run_point(cp: &CrashPoint, scratch: &Path, rng: &mut Rng, tally: &mut Tally) {
    let plans = [plan(&cp.files, PAGE), plan(&cp.files, SECTOR)];
    let mut seen = HashSet::new();
    let mut failed = 0usize;
    let mut done = 0usize;
    // The extremes: nothing pending reached the disk, or all of it did.
    for s in [Strategy::AllOld, Strategy::AllNew] {
        let choice = choose(cp, &plans[0], s, rng);
        if !seen.insert(mix_key(cp, &plans, 0, &choice)) {
            continue;
        }
        done += 1;
        materialize(scratch, &cp.files, &plans[0], &choice);
        for mode in [
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::TolerateTailCorruption,
        ] {
            // Recovery in tolerate mode may change the directory: build it again.
            if mode == RecoveryMode::TolerateTailCorruption {
                materialize(scratch, &cp.files, &plans[0], &choice);
            }
            tally.extremes += 1;
            let r = guarded(|| check_dir(scratch, &cp.accept, mode, true).map(drop));
            if let Err(e) = r {
                failed += 1;
                tally.fail(format!(
                    "{} [{s:?}, opened in {mode:?}; entries 1..={} must survive]\n  state: {}\n  \
                     result: {e}",
                    cp.label,
                    cp.accept.floor,
                    describe(&cp.files, &plans[0], &choice)
                ));
            }
        }
    }
    let mut attempt = 0;
    let mut random = 0;
    while random < cp.budget && attempt < cp.budget * 4 {
        attempt += 1;
        let which = usize::from(rng.chance(0.25));
        let p = &plans[which];
        let strategy = match rng.below(10) {
            0..=1 => Strategy::Uniform,
            2..=5 => Strategy::Biased {
                p: [0.02, 0.1, 0.5, 0.9, 0.98][rng.below(5) as usize],
            },
            _ => Strategy::Ordered {
                t: rng.below(p.units as u64 + 1) as usize,
                rev: rng.chance(0.4),
            },
        };
        let choice = choose(cp, p, strategy, rng);
        if !seen.insert(mix_key(cp, &plans, which, &choice)) {
            continue;
        }
        random += 1;
        done += 1;
        tally.mixes += 1;
        materialize(scratch, &cp.files, p, &choice);
        let cont = random % 4 == 0;
        if cont {
            tally.continued += 1;
        }
        let r = guarded(|| {
            let s = check_dir(
                scratch,
                &cp.accept,
                RecoveryMode::TolerateTailCorruption,
                false,
            )?;
            if cont {
                check_continue(scratch, s)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            failed += 1;
            tally.fail(format!(
                "{} [mix {random}, {strategy:?}, {}; entries 1..={} must survive]\n  state: {}\n  \
                 result: {e}",
                cp.label,
                if p.gran == PAGE {
                    "4 KiB pages"
                } else {
                    "512-byte sectors"
                },
                cp.accept.floor,
                describe(&cp.files, p, &choice)
            ));
        }
    }
    tally.per_point.push((cp.label.clone(), done, failed));
}

/// Builds one directory by hand (`pick(file, offset)` names the version of each page,
/// `presence(file)` the presence option) and checks it. For the negative controls.
fn check_custom(
    scratch: &Path,
    files: Vec<FileCands>,
    accept: &Accept,
    presence: impl Fn(&str) -> usize,
    pick: impl Fn(&str, usize) -> usize,
) -> (String, Result<(), String>) {
    let cp = CrashPoint {
        label: String::new(),
        files,
        accept: accept.clone(),
        budget: 0,
    };
    let p = plan(&cp.files, PAGE);
    let mut choice = vec![0u8; p.units];
    for (f, fp) in cp.files.iter().zip(&p.files) {
        if let Some(u) = fp.presence {
            choice[u] = presence(&f.name) as u8;
        }
        for b in &fp.blocks {
            choice[b.unit] = pick(&f.name, b.off) as u8;
        }
    }
    materialize(scratch, &cp.files, &p, &choice);
    let desc = describe(&cp.files, &p, &choice);
    let r = guarded(|| {
        check_dir(scratch, accept, RecoveryMode::TolerateTailCorruption, true).map(drop)
    });
    (desc, r)
}

/// The test's directories. Mixed directories are written, opened and recovered by the thousand,
/// so they go to tmpfs when there is one (the engine's fsyncs then cost nothing; what it reads
/// and writes is the same), else to the default temporary directory.
fn test_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("raftwal-power-loss-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// A test root holding `work`, a store directory created and closed (all of its files on disk),
/// and the path `scratch`, where mixed directories are built.
fn created_store() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = test_root();
    let work = root.path().join("work");
    let scratch = root.path().join("mix");
    DiskStorage::open(&work)
        .expect("create")
        .close()
        .expect("close");
    (root, work, scratch)
}

/// Feeds an operation's flushes to `disk` and checks a crash point during each of them, then one
/// after the operation returned if anything is still pending. `accept` holds while the operation
/// runs; `after` once it returned. `op` names the operation, `short` its versions.
#[allow(clippy::too_many_arguments)]
fn crash_points(
    op: &str,
    short: &str,
    flushes: &[Flush],
    end: &Files,
    disk: &mut Disk,
    accept: &Accept,
    after: &Accept,
    budget: usize,
    scratch: &Path,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    let mut check = |label: String, disk: &Disk, accept: &Accept| {
        let cp = CrashPoint {
            label,
            files: disk.candidates(),
            accept: accept.clone(),
            budget,
        };
        run_point(&cp, scratch, rng, tally);
    };
    for (n, f) in flushes.iter().enumerate() {
        let what = format!(
            "{} #{} of {}",
            f.call,
            n + 1,
            f.target.as_deref().unwrap_or("the directory")
        );
        disk.observe(&f.files, &format!("{short}, {what}"));
        check(format!("{op}: power lost during {what}"), disk, accept);
        disk.flushed(&f.target);
    }
    disk.observe(end, &format!("{short}, returned"));
    let pending = disk.pending();
    if !pending.is_empty() {
        let label = format!(
            "{op}: power lost after it returned, with pending: {}",
            pending.join(", ")
        );
        check(label, disk, after);
    }
}

// ---------------------------------------------------------------------------------------------
// the synced protocol
// ---------------------------------------------------------------------------------------------

/// A store with default options (`sync_writes: true`): every `save` is acknowledged when it
/// returns. A power loss during a `save` keeps what the previous ones acknowledged; after it
/// returned, everything it was given.
#[test]
fn power_loss_synced_saves() {
    let started = Instant::now();
    let (_root, work, scratch) = created_store();
    let store = DiskStorage::open(&work).expect("open");
    let mut disk = Disk::durable(&capture(&work), "created");
    let mut rng = Rng(0x005E_ED0F_9017);
    let mut tally = Tally::default();
    let mut log: Arc<Vec<Entry>> = Arc::new(Vec::new());
    let mut hs = HardState::default();
    // Whole directories after each step, for the negative controls.
    let mut durable_dirs: Vec<Files> = vec![capture(&work)];

    let t = hard_state;
    type Script = Vec<(&'static str, HardState, Vec<Entry>, usize)>;
    #[rustfmt::skip]
    let script: Script = vec![
        ("first entries", t(1, 1, 0), make_entries(1, 3, 1, Size::Small), 30),
        ("140 small entries across slot pages", t(1, 1, 3), make_entries(4, 140, 1, Size::Small), 60),
        ("big payloads, commit past the old last index", t(1, 1, 145), make_entries(141, 150, 1, Size::Big), 60),
        ("hard state only", t(2, 0, 150), Vec::new(), 8),
        ("entries only (default hard state)", HardState::default(), make_entries(151, 300, 1, Size::Mixed), 60),
        ("overwrite 160.. with a higher term", t(3, 2, 155), make_entries(160, 420, 3, Size::Small), 80),
        ("append with contexts around page sizes", t(3, 2, 400), make_entries(421, 460, 3, Size::Mixed), 40),
        ("bulk append to 29,950", t(3, 2, 420), make_entries(461, 29_950, 3, Size::Tiny), 10),
        ("append across the 30,000 boundary (rotation)", t(4, 1, 29_950), make_entries(29_951, 30_260, 4, Size::Small), 150),
        ("append in the new file", t(4, 1, 29_980), make_entries(30_261, 30_400, 4, Size::Mixed), 30),
        ("overwrite 29,990.. across files (higher term)", t(5, 2, 29_985), make_entries(29_990, 30_300, 5, Size::Small), 150),
        ("append after the cross-file overwrite", t(5, 2, 30_000), make_entries(30_301, 30_500, 5, Size::Mixed), 30),
        ("overwrite from the first slot of file 2 (higher term)", t(6, 3, 30_000), make_entries(30_001, 30_050, 6, Size::Small), 60),
        ("big payloads in file 2, commit past the old last index", t(6, 3, 30_055), make_entries(30_051, 30_060, 6, Size::Big), 40),
    ];

    let mut negative_controls = Vec::new();
    for (k, (what, new_hs, entries, budget)) in script.into_iter().enumerate() {
        let k = k + 1;
        let op = format!("step {k} ({what})");
        let new_log = Arc::new(apply_entries(&log, &entries));
        let after_hs = if new_hs == HardState::default() {
            hs.clone()
        } else {
            new_hs.clone()
        };
        let (r, flushes, end) = record(&work, || {
            store.save(&new_hs, &entries, &Snapshot::default())
        });
        r.unwrap_or_else(|e| panic!("{op}: save failed: {e}"));
        assert!(
            !flushes.is_empty(),
            "{op}: a synced save made no flush this test could see (the engine no longer calls \
             libc fdatasync/fsync?): the test cannot tell its flush points"
        );
        let flushed: Vec<String> = flushes
            .iter()
            .map(|f| f.target.clone().unwrap_or_else(|| "dir".to_string()))
            .collect();
        eprintln!("{op}: flushes {}", flushed.join(", "));
        let before = (format!("log before step {k}"), log.clone(), hs.clone());
        let after = (
            format!("log after step {k}"),
            new_log.clone(),
            after_hs.clone(),
        );
        // A synced save writes the meta page only after it flushed the log: a mix giving the new
        // hard state must give the whole new log (when the hard state did not change, the
        // unpaired state before the save accepts any of the logs).
        let accept = Accept::new(&[before, after.clone()]).paired_last();
        let acked = Accept::new(&[after]);
        crash_points(
            &op,
            &format!("step {k}"),
            &flushes,
            &end,
            &mut disk,
            &accept,
            &acked,
            budget,
            &scratch,
            &mut rng,
            &mut tally,
        );
        durable_dirs.push(end);

        // Negative controls: directories the synced protocol never leaves, built by hand; the
        // checks must reject them, or they could not catch the engine leaving them either.
        let (d, m) = (&durable_dirs[k - 1], &durable_dirs[k]);
        // The meta page after the save, every log page from before it.
        let meta_new_log_old = || {
            let files = cands_of(&[("before", d), ("after", m)]);
            check_custom(
                &scratch,
                files,
                &accept,
                |_| 0,
                |f, _| usize::from(f == META_FILE),
            )
        };
        if k == 3 {
            // Commit 145 over the old log (last index 140): what a meta page written before the
            // log's flush completed leaves.
            let (desc, r) = meta_new_log_old();
            negative_controls.push(("meta page new, log pages old", desc, r));
        }
        if k == 6 {
            // Overwrite from 160: the old slot pages 0 and 1 (indexes 1..=256) kept, the new
            // entries' later slot pages and payloads on disk — the cut not durable: old
            // 160..=256, then new 257.., a log no node had.
            let files = cands_of(&[("before", d), ("after", m)]);
            // The meta page is kept old (its hard state goes with any of the logs), so only the
            // prefix check can reject this one.
            let (desc, r) = check_custom(
                &scratch,
                files,
                &accept,
                |_| 1,
                |f, off| usize::from(f != META_FILE && !(f == "00001.wal" && off < 2 * PAGE)),
            );
            negative_controls.push(("overwrite with its cut lost", desc, r));
            // Commit 155 over the old log (last index 300): the commit index is within the old
            // log, so only the pairing of the hard state with the whole new log rejects it.
            let (desc, r) = meta_new_log_old();
            negative_controls.push(("meta page new (commit in the old log), log old", desc, r));
            // A flushed page lost: slot page 2 of the log before the step (entries 257..=300,
            // above the commit index 150) zeroed: acknowledged entries are gone.
            let mut broken = d.clone();
            let mut f = broken["00001.wal"].to_vec();
            f[2 * PAGE..3 * PAGE].fill(0);
            broken.insert("00001.wal".to_string(), Arc::new(f));
            let files = cands_of(&[("before", d), ("slot page 2 zeroed", &broken)]);
            let before_only = Accept::new(&[(
                format!("log before step {k}"),
                accept.states[0].log.clone(),
                accept.states[0].hs.clone(),
            )]);
            let (desc, r) = check_custom(
                &scratch,
                files,
                &before_only,
                |_| 0,
                |f, off| usize::from(f == "00001.wal" && off == 2 * PAGE),
            );
            negative_controls.push(("an acknowledged slot page lost", desc, r));
        }
        log = new_log;
        hs = after_hs;
        eprintln!(
            "{op} done at {:.1?}: {} mixes so far",
            started.elapsed(),
            tally.mixes
        );
    }
    store.close().expect("close");

    eprintln!("---- negative controls (each must be rejected) ----");
    for (what, desc, r) in &negative_controls {
        eprintln!("{what}: {desc}\n  -> {r:?}");
    }
    assert_eq!(negative_controls.len(), 4, "the negative controls ran");
    for (what, desc, r) in &negative_controls {
        assert!(
            r.is_err(),
            "negative control '{what}' was accepted, so the checks cannot tell a broken state from \
             a good one: {desc}"
        );
    }
    // 788 when written; a regression that cut the mixes to the extremes would pass silently.
    tally.finish("synced protocol", started, 394);
}

// ---------------------------------------------------------------------------------------------
// the unsynced protocol
// ---------------------------------------------------------------------------------------------

/// `sync_writes: false`: batches of saves, each ended by `sync()`. Only what a completed `sync()`
/// covered is acknowledged; a power loss at any instant must leave a directory that opens to a
/// prefix of one of the logs written since.
#[test]
fn power_loss_unsynced_batches() {
    let started = Instant::now();
    let (_root, work, scratch) = created_store();
    let store = DiskStorage::open_with(&work, unsynced()).expect("open");
    let mut disk = Disk::durable(&capture(&work), "created");
    let mut rng = Rng(0xC0FF_EE0F_9017);
    let mut tally = Tally::default();
    let mut log: Arc<Vec<Entry>> = Arc::new(Vec::new());
    let mut hs = HardState::default();
    let t = hard_state;
    type Batch = Vec<(HardState, Vec<Entry>)>;
    #[rustfmt::skip]
    let batches: Vec<(&str, Batch, usize)> = vec![
        ("two appends", vec![
            (t(1, 1, 0), make_entries(1, 50, 1, Size::Small)),
            (t(1, 1, 20), make_entries(51, 300, 1, Size::Small)),
        ], 50),
        ("append, then overwrite 200.. with a higher term", vec![
            (HardState::default(), make_entries(301, 400, 1, Size::Small)),
            (t(2, 2, 150), make_entries(200, 450, 2, Size::Small)),
        ], 60),
        ("big payloads, then a commit", vec![
            (t(2, 2, 300), make_entries(451, 470, 2, Size::Big)),
            (t(2, 2, 460), Vec::new()),
        ], 40),
        // Rotations between flushes: a full file is not flushed before the next is created, so
        // a power loss can leave a later file on disk while the end of an earlier one is not,
        // and two rotations leave two unflushed files (the next's header may be lost too).
        ("across one file boundary between flushes", vec![
            (t(3, 3, 470), make_entries(471, 29_990, 3, Size::Tiny)),
            (HardState::default(), make_entries(29_991, 30_100, 3, Size::Tiny)),
            (t(3, 3, 29_000), Vec::new()),
        ], 30),
        ("across two file boundaries between flushes", vec![
            (HardState::default(), make_entries(30_101, 59_950, 4, Size::Tiny)),
            (t(4, 4, 30_100), make_entries(59_951, 60_050, 4, Size::Tiny)),
            (HardState::default(), make_entries(60_051, 90_020, 4, Size::Tiny)),
        ], 30),
    ];
    for (b, (what, saves, budget)) in batches.into_iter().enumerate() {
        let b = b + 1;
        let mut states = vec![(
            format!("log synced before batch {b}"),
            log.clone(),
            hs.clone(),
        )];
        for (j, (h, entries)) in saves.iter().enumerate() {
            let op = format!("batch {b} ({what}), save {}", j + 1);
            if let Some(i) = entries
                .first()
                .map(|e| e.index)
                .filter(|&i| i <= log.len() as u64)
            {
                // Inside this save the cut slots are zero before the new ones are written.
                let name = log_name(file_of(i));
                let mut f = disk.live[&name].latest().expect("the cut file").to_vec();
                f[slot_at(slot_of(i)) as usize..SLOT_AREA_LEN as usize].fill(0);
                disk.add_pending(
                    &name,
                    Ver {
                        label: format!("batch {b} save {}, cut slots zeroed", j + 1),
                        data: Arc::new(f),
                    },
                );
                states.push((
                    format!("log cut inside save {}", j + 1),
                    Arc::new(log[..i as usize - 1].to_vec()),
                    hs.clone(),
                ));
            }
            log = Arc::new(apply_entries(&log, entries));
            if *h != HardState::default() {
                hs = h.clone();
            }
            states.push((format!("log after save {}", j + 1), log.clone(), hs.clone()));
            let (r, flushes, end) = record(&work, || store.save(h, entries, &Snapshot::default()));
            r.unwrap_or_else(|e| panic!("{op}: save failed: {e}"));
            let accept = Accept::new(&states);
            crash_points(
                &op,
                &format!("batch {b} save {}", j + 1),
                &flushes,
                &end,
                &mut disk,
                &accept,
                &accept,
                budget,
                &scratch,
                &mut rng,
                &mut tally,
            );
        }
        let op = format!("batch {b} ({what}), sync()");
        let (r, flushes, end) = record(&work, || store.sync());
        r.unwrap_or_else(|e| panic!("{op}: {e}"));
        // Only the hard state `sync()` stores (the batch's last) is paired with its whole log:
        // `sync()` flushes the log and only then writes the meta page. An unsynced `save` does
        // not write the meta page at all, so the hard states of the saves inside the batch (and
        // the cut states) promise no pairing; the state before the batch was durable with its
        // log, and its hard state stays on disk while the batch's log pages may be written back.
        let accept = Accept::new(&states).paired_last();
        let acked = Accept::new(&[states.last().expect("a state").clone()]);
        crash_points(
            &op,
            &format!("batch {b} sync"),
            &flushes,
            &end,
            &mut disk,
            &accept,
            &acked,
            budget,
            &scratch,
            &mut rng,
            &mut tally,
        );
        eprintln!(
            "{op} done at {:.1?}: {} mixes so far",
            started.elapsed(),
            tally.mixes
        );
    }
    store.close().expect("close");
    // 468 when written.
    tally.finish("unsynced protocol", started, 234);
}
