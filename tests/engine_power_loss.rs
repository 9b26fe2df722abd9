//! Power loss of an engine root (docs/DESIGN.md §9 "Faults": "after SIGKILL or a power loss, every
//! part of every durable commit is there, in its own group and no other; a torn end of the shared
//! files is the tail ...; `create_group` and `remove_group` are atomic under a crash"). SIGKILL
//! (tests/engine_sigkill.rs) keeps the page cache; a power loss keeps only what reached the disk.
//! This test records every flush the engine makes while it runs a script of operations, builds
//! roots that a power loss at each of those instants can leave behind, and opens each of them.
//!
//! # Recording the flush points
//!
//! This test binary defines `fdatasync`, `fsync` and `syncfs` itself (the engine flushes the
//! journal and meta pages with `File::sync_data`, files and directories with `sync_all`, the file
//! system at checkpoints with `libc::syncfs`); a symbol defined in the executable takes precedence
//! over the C library's, so every flush passes through [`on_flush`], which (for a descriptor
//! under the root being recorded, from any thread: the background checkpoint's too) captures the
//! whole root through the page cache — every directory's listing (name -> inode) and every file's
//! content (inode -> pages) — and then makes the real system call. The root lives on tmpfs
//! (`/dev/shm`), so inode numbers are never reused during the test.
//!
//! # The power-loss model
//!
//! Per inode: the content as of its last flush (nothing, for a file or directory made since the
//! recording began and never flushed: an empty file, an empty directory), and every version the
//! page cache held since (as captured at the flush points and after each operation returned).
//! `fdatasync`/`fsync` of a file make that file's current content durable; `fsync` of a directory
//! its current listing; `syncfs` everything. A power loss keeps, for every directory, one of its
//! listings (the durable one or a later one: directory operations reach the disk in order), and
//! for every 4 KiB page of every file reachable through those listings, the page as in any one of
//! its versions, independently of the other pages; a file's length is one of its versions'.
//! A crash point is the state at one flush (everything before it durable, everything since the
//! previous durable point pending), which also covers every instant before that flush began.
//!
//! The mixes of a crash point: every unit as durable (all old) and as the page cache held it (all
//! new), each opened in both recovery modes, then seeded random ones (uniform, biased towards old
//! or new, in order: a prefix of the units new), deduplicated.
//!
//! # What every mix must give
//!
//! `Engine::open_with` in `TolerateTailCorruption` must succeed (in `AbsoluteConsistency` too for
//! the all-old and all-new mixes; for the others it may refuse, and what it opens is checked the
//! same way), and then `engine_ops::check_root`: the groups of the model after every operation
//! that returned (a write with `sync_writes: true` is durable when it returns) and, for the groups
//! the operation in flight changes, as before it or as after it, exactly: every entry and term,
//! hard state, conf state, snapshot, the data a truncation cleared, raft id and checkpoint index
//! (one of those set since the group's last journaled write); a group being created is absent or
//! empty, one being removed
//! whole or absent; no payload of one group in another. Every few mixes the recovered root also
//! takes a write to every group, is closed and opened in `AbsoluteConsistency`, and must hold it.
//!
//! # The scripts
//!
//! Seeded operations from `engine_ops::Model::gen_op` on 4-8 groups (batches across groups,
//! saves, received snapshots, compaction, conf states, `truncate_entries_until`, `set_uint`,
//! syncs, group creation and removal), with journal
//! segments of 32 KiB (rotation and the recycled spare), the engine closed and opened again every
//! 10-25 operations (the closing checkpoint, the journal trimmed, recovery): the opens and closes
//! are recorded too. Script `deterministic` checkpoints only at close and on the operations that
//! make a group durable on their own (the background checkpoint runs every 5 s, longer than a
//! session lasts); script `background` sets `checkpoint_bytes` to 48 KiB, so the background thread
//! checkpoints while operations run and its flushes are crash points too.
//!
//! Every violation is collected (crash point, mix, what open or the check said) and the test fails
//! at the end listing the first of them.
//!
//! # Encrypted roots
//!
//! Some scripts run on an encrypted root (`EngineOptions::encryption_key`, every open of the
//! script and of its crash points: sealed journal records, payloads and meta pages), chosen by
//! seed ([`script_key`]): "fresh root", "background, short", both torn tail cuts, "truncate
//! without sync_writes". Once per encrypted script, the uniform mix of a crash point after the
//! first operation returned, which opened with the key, is also opened with no key and with
//! another key: `Error::Encryption` both times, and no file changed.
//!
//! # Long runs by hand
//!
//! `RAFTWAL_ENGINE_POWER_LOSS_SCRIPTS=40` runs 40 more seeded scripts
//! (`power_loss_seeded_scripts`; `RAFTWAL_ENGINE_POWER_LOSS_FIRST` to start elsewhere,
//! `RAFTWAL_ENGINE_POWER_LOSS_STEPS` steps each, 80 by default), every other one encrypted;
//! `RAFTWAL_ENGINE_POWER_LOSS_ENCRYPT=all` (or `none`) makes every script of the binary
//! encrypted (or plaintext); `RAFTWAL_ENGINE_POWER_LOSS_JITTER_MS=30` sleeps up to 30 ms
//! (seeded) after each step, so that the background threads run at other points between the
//! operations.

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftwal::{Engine, EngineOptions, RecoveryMode};

#[path = "common/engine_ops.rs"]
mod engine_ops;
#[path = "common/env.rs"]
mod env;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/roots.rs"]
mod roots;
use roots::tree;

use engine_ops::{check_root_window, run_op, splitmix, Limits, Model, Op, Part, Rng};
use layout::segment_name;

const PAGE: usize = 4096;

// The journal's layout (docs/FORMAT.md, tests/common/layout.rs) as offsets into a segment.
use layout::idx::{
    RECORD_ALIGN, RECORD_BODY_AT, RECORD_LEN_AT, RECORD_SEQ_AT, SEGMENT_FIRST_SEQ_AT,
    SEGMENT_RECORDS_AT,
};
const LIMITS: Limits = Limits {
    max_id: 10,
    min_live: 4,
    max_live: 8,
    big_percent: 3,
};

// ---------------------------------------------------------------------------------------------
// what the page cache holds: directory listings and file pages, by inode
// ---------------------------------------------------------------------------------------------

/// A 4 KiB page of a file (`None`: zeroes). Equal pages of consecutive versions share their
/// allocation, so a version costs only the pages it changed.
type Pg = Option<Arc<Vec<u8>>>;

#[derive(Clone)]
struct FileVer {
    len: u64,
    pages: Arc<Vec<Pg>>,
}

impl FileVer {
    fn empty() -> FileVer {
        FileVer {
            len: 0,
            pages: Arc::new(Vec::new()),
        }
    }

    fn page(&self, p: usize) -> &Pg {
        static NONE: Pg = None;
        if (p * PAGE) as u64 >= self.len {
            return &NONE;
        }
        self.pages.get(p).unwrap_or(&NONE)
    }

    fn same(&self, o: &FileVer) -> bool {
        self.len == o.len
            && (Arc::ptr_eq(&self.pages, &o.pages)
                || (self.pages.len() == o.pages.len()
                    && self
                        .pages
                        .iter()
                        .zip(o.pages.iter())
                        .all(|(a, b)| same_page(a, b))))
    }
}

fn same_page(a: &Pg, b: &Pg) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y) || x == y,
        _ => false,
    }
}

static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

/// `bytes` as pages, sharing the pages equal to `prev`'s.
fn paginate(bytes: &[u8], prev: Option<&FileVer>) -> FileVer {
    let pages = bytes
        .chunks(PAGE)
        .enumerate()
        .map(|(p, c)| {
            if c == &ZERO_PAGE[..c.len()] {
                return None;
            }
            if let Some(Some(old)) = prev.map(|v| v.page(p)) {
                if old[..] == *c {
                    return Some(Arc::clone(old));
                }
            }
            Some(Arc::new(c.to_vec()))
        })
        .collect();
    FileVer {
        len: bytes.len() as u64,
        pages: Arc::new(pages),
    }
}

type Listing = Arc<BTreeMap<String, u64>>;

/// The root as the page cache held it at one instant.
#[derive(Clone, Default)]
struct Capture {
    root: u64,
    dirs: BTreeMap<u64, Listing>,
    files: BTreeMap<u64, FileVer>,
}

/// Reads the whole root through the page cache (the lock file aside). Entries that vanish while
/// it reads (another thread of the engine removing them) are left out.
fn capture(root: &Path, prev: &BTreeMap<u64, FileVer>) -> Result<Capture, String> {
    capture_with(root, prev, &mut |_| {})
}

/// [`capture`], calling `listed` with each directory's path once its listing is open (a test
/// moves things there).
fn capture_with(
    root: &Path,
    prev: &BTreeMap<u64, FileVer>,
    listed: &mut dyn FnMut(&Path),
) -> Result<Capture, String> {
    let md = fs::metadata(root).map_err(|e| format!("stat the root: {e}"))?;
    let mut c = Capture {
        root: md.ino(),
        ..Capture::default()
    };
    walk(root, root, md.ino(), true, prev, &mut c, listed)?;
    Ok(c)
}

/// Records directory `ino`, shown as `dir` and opened at `at`, and everything below it.
fn walk(
    dir: &Path,
    at: &Path,
    ino: u64,
    top: bool,
    prev: &BTreeMap<u64, FileVer>,
    c: &mut Capture,
    listed: &mut dyn FnMut(&Path),
) -> Result<(), String> {
    let mut listing = BTreeMap::new();
    // Everything below is read through the directory's descriptor (its `/proc/self/fd` link
    // names the inode, not the path), so that a rename of it or of a parent while the walk
    // runs changes nothing it reads: each listing is one the directory held.
    let handle = match fs::File::open(at) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("open {}: {e}", dir.display())),
    };
    let here = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let rd = fs::read_dir(&here).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
    listed(dir);
    for ent in rd {
        let Ok(ent) = ent else { continue };
        let name = ent.file_name().to_string_lossy().into_owned();
        if top && name == "LOCK" {
            continue;
        }
        let Ok(md) = ent.metadata() else { continue };
        let path = here.join(&name);
        if md.is_dir() {
            walk(&dir.join(&name), &path, md.ino(), false, prev, c, listed)?;
        } else if md.is_file() {
            match fs::read(&path) {
                Ok(b) => {
                    let v = paginate(&b, prev.get(&md.ino()));
                    c.files.insert(md.ino(), v);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("read {}: {e}", dir.join(&name).display())),
            }
        } else {
            continue;
        }
        listing.insert(name, md.ino());
    }
    c.dirs.insert(ino, Arc::new(listing));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the flush hook
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Target {
    File(u64),
    Dir(u64),
    /// `syncfs`: everything.
    Fs,
    /// No flush: the page cache as an operation returned.
    Nothing,
}

struct Event {
    call: &'static str,
    target: Target,
    capture: Capture,
    /// [`PHASE`] when the capture began and when it ended (the script may move on meanwhile).
    phase: (usize, usize),
}

struct Recorder {
    root: PathBuf,
    last: BTreeMap<u64, FileVer>,
    events: Vec<Event>,
    error: Option<String>,
}

static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);
/// `2k + 1` while step `k` of the script runs, `2k` once `k` steps returned.
static PHASE: AtomicUsize = AtomicUsize::new(0);

fn recorder() -> std::sync::MutexGuard<'static, Option<Recorder>> {
    RECORDER.lock().unwrap_or_else(|p| p.into_inner())
}

fn on_flush(call: &'static str, fd: libc::c_int) {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut g = recorder();
        let Some(rec) = g.as_mut() else { return };
        let Ok(path) = fs::read_link(format!("/proc/self/fd/{fd}")) else {
            rec.error = Some(format!("{call}: readlink of fd {fd} failed"));
            return;
        };
        if !path.starts_with(&rec.root) {
            return;
        }
        // SAFETY: fstat on the caller's descriptor, into a zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            rec.error = Some(format!("{call}: fstat of fd {fd} failed"));
            return;
        }
        let target = if call == "syncfs" {
            Target::Fs
        } else if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            Target::Dir(st.st_ino)
        } else {
            Target::File(st.st_ino)
        };
        // A flush of a background thread may capture while the script moves on (by a step
        // at most when its steps flush, which wait for this one; by more without
        // `sync_writes`): the crash point is one somewhere in between.
        let before = PHASE.load(Ordering::SeqCst);
        let c = capture(&rec.root, &rec.last);
        let phase = (before, PHASE.load(Ordering::SeqCst));
        match c {
            Ok(c) => {
                rec.last = c.files.clone();
                rec.events.push(Event {
                    call,
                    target,
                    capture: c,
                    phase,
                });
            }
            Err(e) => rec.error = Some(format!("{call}: capture: {e}")),
        }
    }));
    if r.is_err() {
        if let Some(rec) = recorder().as_mut() {
            rec.error = Some(format!("{call}(fd {fd}): the hook panicked"));
        }
    }
}

/// `fdatasync(2)`, seen by the recorder first (it takes precedence over the C library's symbol
/// in this executable).
#[no_mangle]
pub extern "C" fn fdatasync(fd: libc::c_int) -> libc::c_int {
    on_flush("fdatasync", fd);
    // SAFETY: the raw system call with the caller's descriptor, as the libc wrapper makes it.
    unsafe { libc::syscall(libc::SYS_fdatasync, fd) as libc::c_int }
}

/// `fsync(2)`, seen by the recorder first.
#[no_mangle]
pub extern "C" fn fsync(fd: libc::c_int) -> libc::c_int {
    on_flush("fsync", fd);
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_fsync, fd) as libc::c_int }
}

/// `syncfs(2)`, seen by the recorder first.
#[no_mangle]
pub extern "C" fn syncfs(fd: libc::c_int) -> libc::c_int {
    on_flush("syncfs", fd);
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_syncfs, fd) as libc::c_int }
}

/// Adds an observation of the page cache now (no flush) to the events.
fn observe_now() {
    let mut g = recorder();
    let Some(rec) = g.as_mut() else { return };
    let now = PHASE.load(Ordering::SeqCst);
    let phase = (now, now);
    match capture(&rec.root, &rec.last) {
        Ok(c) => {
            rec.last = c.files.clone();
            rec.events.push(Event {
                call: "(returned)",
                target: Target::Nothing,
                capture: c,
                phase,
            });
        }
        Err(e) => rec.error = Some(format!("capture: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// what the disk may hold
// ---------------------------------------------------------------------------------------------

/// An inode's durable version (first) and the versions the page cache held since.
#[derive(Clone)]
struct Track<V> {
    versions: Vec<V>,
}

impl<V: Clone> Track<V> {
    fn latest(&self) -> &V {
        self.versions.last().expect("a version")
    }
    fn flushed(&mut self) {
        let v = self.latest().clone();
        self.versions = vec![v];
    }
}

#[derive(Clone, Default)]
struct Disk {
    root: u64,
    dirs: BTreeMap<u64, Track<Listing>>,
    files: BTreeMap<u64, Track<FileVer>>,
}

impl Disk {
    fn observe(&mut self, c: &Capture) {
        self.root = c.root;
        for (ino, l) in &c.dirs {
            let t = self.dirs.entry(*ino).or_insert_with(|| Track {
                versions: vec![Arc::new(BTreeMap::new())],
            });
            if **t.latest() != **l {
                t.versions.push(Arc::clone(l));
            }
        }
        for (ino, f) in &c.files {
            let t = self.files.entry(*ino).or_insert_with(|| Track {
                versions: vec![FileVer::empty()],
            });
            if !t.latest().same(f) {
                t.versions.push(f.clone());
            }
        }
    }

    fn flushed(&mut self, target: Target) {
        match target {
            Target::File(ino) => {
                if let Some(t) = self.files.get_mut(&ino) {
                    t.flushed();
                }
            }
            Target::Dir(ino) => {
                if let Some(t) = self.dirs.get_mut(&ino) {
                    t.flushed();
                }
            }
            Target::Fs => {
                self.dirs.values_mut().for_each(Track::flushed);
                self.files.values_mut().for_each(Track::flushed);
            }
            Target::Nothing => {}
        }
    }

    fn pending(&self) -> bool {
        self.dirs.values().any(|t| t.versions.len() > 1)
            || self.files.values().any(|t| t.versions.len() > 1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Strategy {
    AllOld,
    AllNew,
    Uniform,
    /// Each unit from a later version with probability `p` percent.
    Biased(u64),
    /// The first `t` units (in walk order) new, the rest old; or the other way round.
    Ordered {
        t: usize,
        rev: bool,
    },
}

/// One root a power loss may leave: directories and files (path, length, pages).
struct Mix {
    dirs: Vec<String>,
    files: Vec<(String, u64, Vec<Pg>)>,
    /// Which version each unit came from, for the failure messages.
    notes: Vec<String>,
}

struct Chooser<'a> {
    s: Strategy,
    rng: &'a mut Rng,
    unit: usize,
}

impl Chooser<'_> {
    /// A version index among `n`.
    fn pick(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let u = self.unit;
        self.unit += 1;
        match self.s {
            Strategy::AllOld => 0,
            Strategy::AllNew => n - 1,
            Strategy::Uniform => self.rng.below(n as u64) as usize,
            Strategy::Biased(p) => {
                if self.rng.chance(p) {
                    1 + self.rng.below(n as u64 - 1) as usize
                } else {
                    0
                }
            }
            Strategy::Ordered { t, rev } => {
                if (u < t) != rev {
                    n - 1
                } else {
                    0
                }
            }
        }
    }
}

fn build_mix(d: &Disk, s: Strategy, rng: &mut Rng) -> Mix {
    let mut m = Mix {
        dirs: Vec::new(),
        files: Vec::new(),
        notes: Vec::new(),
    };
    let mut ch = Chooser { s, rng, unit: 0 };
    let mut seen = HashSet::new();
    walk_mix(d, d.root, "", &mut ch, &mut m, &mut seen);
    m
}

fn walk_mix(
    d: &Disk,
    ino: u64,
    path: &str,
    ch: &mut Chooser<'_>,
    m: &mut Mix,
    seen: &mut HashSet<u64>,
) {
    if !seen.insert(ino) {
        return;
    }
    let Some(t) = d.dirs.get(&ino) else { return };
    let v = ch.pick(t.versions.len());
    if t.versions.len() > 1 {
        m.notes
            .push(format!("{path}/: listing {v} of {}", t.versions.len()));
    }
    for (name, child) in t.versions[v].iter() {
        let p = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        if d.dirs.contains_key(child) {
            m.dirs.push(p.clone());
            walk_mix(d, *child, &p, ch, m, seen);
        } else if let Some(f) = d.files.get(child) {
            if !seen.insert(*child) {
                continue;
            }
            let n = f.versions.len();
            let lv = ch.pick(n);
            let len = f.versions[lv].len;
            let npages = (len as usize).div_ceil(PAGE);
            let mut pages = Vec::with_capacity(npages);
            let mut from = Vec::new();
            for p in 0..npages {
                let first = f.versions[0].page(p);
                let differ = f.versions[1..].iter().any(|v| !same_page(v.page(p), first));
                let k = if differ { ch.pick(n) } else { 0 };
                if differ {
                    from.push(k);
                }
                pages.push(f.versions[k].page(p).clone());
            }
            if n > 1 {
                let newer = from.iter().filter(|&&k| k > 0).count();
                m.notes.push(format!(
                    "{p}: length of version {lv} of {n}, {newer} of {} differing pages newer",
                    from.len()
                ));
            }
            m.files.push((p, len, pages));
        }
    }
}

impl Mix {
    /// Equal keys, equal roots.
    fn key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.dirs.hash(&mut h);
        for (p, len, pages) in &self.files {
            p.hash(&mut h);
            len.hash(&mut h);
            for pg in pages {
                pg.as_ref()
                    .map_or(0, |a| Arc::as_ptr(a) as usize)
                    .hash(&mut h);
            }
        }
        h.finish()
    }

    fn materialize(&self, dir: &Path) {
        if dir.exists() {
            fs::remove_dir_all(dir).expect("empty the scratch root");
        }
        fs::create_dir_all(dir).expect("create the scratch root");
        for d in &self.dirs {
            fs::create_dir_all(dir.join(d)).expect("create a directory");
        }
        for (p, len, pages) in &self.files {
            let path = dir.join(p);
            let f = fs::File::create(&path).expect("create a file");
            for (k, pg) in pages.iter().enumerate() {
                if let Some(b) = pg {
                    let at = (k * PAGE) as u64;
                    let n = (b.len() as u64).min(len - at) as usize;
                    f.write_all_at(&b[..n], at).expect("write a page");
                }
            }
            f.set_len(*len).expect("set_len");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// checking the mixes
// ---------------------------------------------------------------------------------------------

fn opts(mode: RecoveryMode, checkpoint_bytes: u64, key: Option<[u8; 32]>) -> EngineOptions {
    EngineOptions {
        recovery_mode: mode,
        journal_segment_bytes: 32 << 10,
        checkpoint_bytes,
        encryption_key: key,
        ..Default::default()
    }
}

/// The key of the encrypted scripts' roots; [`OTHER_KEY`] is one that does not fit them.
const KEY: [u8; 32] = *b"raftwal engine power-loss key!!!";
const OTHER_KEY: [u8; 32] = *b"not the key of an encrypted root";

/// The scripts of `cargo test` whose roots are encrypted, by seed: "fresh root", "background,
/// short", both torn tail cuts, "truncate without sync_writes". Few and short: unoptimised
/// (a debug build), the cipher's generic code, instantiated in raftwal, makes an encrypted
/// script 2-10x slower than a plaintext one.
const ENCRYPTED_SEEDS: [u64; 4] = [0x5EED_0000, 0x5EED_0009, 0x5EED_0005, 0x5EED_0008];

/// The first seed of `power_loss_seeded_scripts` (a long run by hand).
const SEEDED: u64 = 0x5EED_1000;

/// The key a script's root is made and opened with, from its seed: [`ENCRYPTED_SEEDS`], and
/// every other script of `power_loss_seeded_scripts`. `RAFTWAL_ENGINE_POWER_LOSS_ENCRYPT=all`
/// encrypts every script (a long run by hand), `none` none.
fn script_key(seed: u64) -> Option<[u8; 32]> {
    let encrypted = match std::env::var("RAFTWAL_ENGINE_POWER_LOSS_ENCRYPT").as_deref() {
        Ok("all") => true,
        Ok("none") => false,
        Ok(other) => panic!("RAFTWAL_ENGINE_POWER_LOSS_ENCRYPT={other}: want all or none"),
        Err(_) => ENCRYPTED_SEEDS.contains(&seed) || (seed >= SEEDED && (seed - SEEDED) % 2 == 1),
    };
    encrypted.then_some(KEY)
}

/// The encrypted root in `dir` (one a power loss left) opened with no key and with another
/// key: each `Error::Encryption`, and no file changed, byte for byte.
fn refuses_other_keys(dir: &Path) -> Result<(), String> {
    let before = tree(dir);
    for (key, which) in [(None, "no key"), (Some(OTHER_KEY), "another key")] {
        let o = opts(RecoveryMode::TolerateTailCorruption, u64::MAX / 2, key);
        match Engine::open_with(dir, o) {
            Err(raftwal::Error::Encryption { .. }) => {}
            Err(e) => return Err(format!("opened with {which}: not Error::Encryption: {e:?}")),
            Ok(_) => return Err(format!("opened with {which}: the open succeeded")),
        }
        let changed = roots::changed(&before, &tree(dir));
        if !changed.is_empty() {
            return Err(format!("the open with {which} changed {changed:?}"));
        }
    }
    Ok(())
}

/// What a crash point must give: each group in one of the states `window` gives it (the
/// models after consecutive steps, from the last step that acknowledged everything before it
/// to the step in flight), from its `floor` on (`engine_ops::check_root_window`).
#[derive(Clone, Copy)]
struct Accept<'a> {
    window: &'a [Model],
    floor: &'a BTreeMap<u64, usize>,
    /// A strict open may refuse even the all-old and all-new mixes: the root held a torn tail
    /// that no open has cut durably yet.
    strict_may_refuse: bool,
    /// A step is in flight: its journal record may be half written in what a background
    /// thread's flush captured.
    inflight: bool,
    /// Every how many mixes the recovered root also takes a write (`check_mix`'s `cont`).
    cont_every: usize,
    /// The root's key.
    key: Option<[u8; 32]>,
    /// Whether this crash point's uniform mix is also opened with keys that do not fit it
    /// (once per encrypted script).
    refuse_keys: bool,
}

/// Opens the mix in `dir` in `mode` and checks it; with `cont`, then writes to every group,
/// images the root as a kill would leave it then, closes, and opens both strictly again.
fn check_mix(dir: &Path, mode: RecoveryMode, acc: Accept<'_>, cont: bool) -> Result<(), String> {
    let strict = mode == RecoveryMode::AbsoluteConsistency;
    let opened = Instant::now();
    let e = match Engine::open_with(dir, opts(mode, u64::MAX / 2, acc.key)) {
        Ok(e) => e,
        Err(err) if strict => return Err(format!("strict open refused: {err}")),
        Err(err) => return Err(format!("open: {err}")),
    };
    let found = check_root_window(&e, acc.window, acc.floor)?;
    if !cont {
        e.close().map_err(|err| format!("close: {err}"))?;
        return Ok(());
    }
    let parts: Vec<Part> = found
        .groups
        .iter()
        .map(|(gid, g)| {
            let t = g.hs.0.max(g.last_term()).max(1);
            Part {
                gid: *gid,
                snapshot: None,
                first: g.last() + 1,
                terms: vec![t],
                hs: (t, g.hs.1.max(1), g.hs.2),
            }
        })
        .collect();
    let mut after = found.clone();
    let op = Op::Write(parts);
    after.apply(&op);
    if !after.groups.is_empty() {
        run_op(&e, &op).map_err(|err| format!("a write after recovery: {err}"))?;
    }
    // What a kill leaves now (the engine holds the root; no checkpoint can have run unless the
    // machine stalled for seconds, when the image is not taken): what this open did must leave a
    // root that opens, strictly too, whatever comes next (a cut made durable, say).
    let image = dir.with_extension("killed");
    let imaged = opened.elapsed() < Duration::from_secs(3) && {
        copy_root(dir, &image);
        true
    };
    e.close().map_err(|err| format!("close: {err}"))?;
    let none = BTreeMap::new();
    let e = Engine::open_with(
        dir,
        opts(RecoveryMode::AbsoluteConsistency, u64::MAX / 2, acc.key),
    )
    .map_err(|err| format!("strict open after recovery, a write and close: {err}"))?;
    check_root_window(&e, std::slice::from_ref(&after), &none)
        .map_err(|err| format!("after recovery and a write: {err}"))?;
    e.close().map_err(|err| format!("close: {err}"))?;
    if imaged {
        let e = Engine::open_with(
            &image,
            opts(RecoveryMode::AbsoluteConsistency, u64::MAX / 2, acc.key),
        )
        .map_err(|err| format!("strict open of a kill after recovery and a write: {err}"))?;
        check_root_window(&e, std::slice::from_ref(&after), &none)
            .map_err(|err| format!("a kill after recovery and a write: {err}"))?;
        e.close().map_err(|err| format!("close: {err}"))?;
        fs::remove_dir_all(&image).map_err(|err| format!("remove the image: {err}"))?;
    }
    Ok(())
}

/// Copies the root at `from` to `to` (replacing it) as a kill leaves it
/// ([`roots::kill_image`]).
fn copy_root(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    roots::kill_image(from, to);
}

#[derive(Default)]
struct Tally {
    points: usize,
    mixes: usize,
    strict_opens: usize,
    strict_refused: usize,
    continued: usize,
    /// Whether a mix was opened with keys that do not fit it.
    keys_refused: bool,
    violations: Vec<String>,
}

/// Checks one crash point: the extremes in both modes, then `random` seeded mixes.
fn run_point(
    d: &Disk,
    label: &str,
    acc: Accept<'_>,
    scratch: &Path,
    rng: &mut Rng,
    random: usize,
    t: &mut Tally,
) {
    t.points += 1;
    let mut seen = HashSet::new();
    let mut strategies = vec![Strategy::AllOld, Strategy::AllNew];
    for k in 0..random {
        strategies.push(match k % 4 {
            0 => Strategy::Uniform,
            1 => Strategy::Biased(20),
            2 => Strategy::Biased(80),
            _ => Strategy::Ordered {
                t: rng.below(64) as usize,
                rev: rng.chance(50),
            },
        });
    }
    for (k, s) in strategies.into_iter().enumerate() {
        let mix = build_mix(d, s, rng);
        if !seen.insert(mix.key()) {
            continue;
        }
        t.mixes += 1;
        mix.materialize(scratch);
        let extreme = k < 2;
        let strict = extreme || t.mixes.is_multiple_of(4);
        let cont = t.mixes % acc.cont_every == 3 % acc.cont_every;
        let mut results = Vec::new();
        let r = catch_unwind(AssertUnwindSafe(|| {
            check_mix(scratch, RecoveryMode::TolerateTailCorruption, acc, cont)
        }))
        .unwrap_or_else(|_| Err("panicked".to_string()));
        t.continued += usize::from(cont && r.is_ok());
        let refuse = acc.refuse_keys && !t.keys_refused && k == 2 && r.is_ok();
        results.push(("tolerant", r));
        if refuse {
            t.keys_refused = true;
            mix.materialize(scratch);
            let r = catch_unwind(AssertUnwindSafe(|| refuses_other_keys(scratch)))
                .unwrap_or_else(|_| Err("panicked".to_string()));
            results.push(("keys that do not fit", r));
        }
        if strict {
            mix.materialize(scratch);
            t.strict_opens += 1;
            let r = catch_unwind(AssertUnwindSafe(|| {
                check_mix(scratch, RecoveryMode::AbsoluteConsistency, acc, false)
            }))
            .unwrap_or_else(|_| Err("panicked".to_string()));
            // The extremes open strictly, but where the root holds a torn tail no open has cut
            // yet, or a record in flight a background flush captured half written.
            let may_refuse = |e: &str| {
                !extreme || acc.strict_may_refuse || acc.inflight && e.contains("journal record")
            };
            match r {
                Err(e) if e.starts_with("strict open refused") && may_refuse(&e) => {
                    t.strict_refused += 1
                }
                r => results.push(("strict", r)),
            }
        }
        for (mode, r) in results {
            if let Err(e) = r {
                t.violations.push(format!(
                    "{label}, mix {s:?}, {mode}: {e}\n    the mix: {}",
                    mix.notes.join("; ")
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the scripts
// ---------------------------------------------------------------------------------------------

fn test_base() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("raftwal-engine-power-loss")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    // Elsewhere inode numbers may be reused while the test runs, which the model does not cover.
    tempfile::tempdir().unwrap()
}

#[derive(Clone)]
enum Step {
    Op(Op),
    /// A close and an open (the first step opens, the last closes).
    Reopen,
    /// `Engine::sync()`, or `GroupStorage::sync()` of a group.
    Sync(Option<u64>),
}

impl Step {
    /// Whether everything before it is durable once it returned, whatever `sync_writes` says.
    fn acknowledges(&self) -> bool {
        matches!(
            self,
            Step::Reopen | Step::Sync(_) | Step::Op(Op::Sync { .. })
        )
    }
}

/// A script of seeded steps, its flushes recorded.
struct Script<'a> {
    name: &'a str,
    seed: u64,
    steps: usize,
    checkpoint_bytes: u64,
    /// Random mixes per crash point (besides all-old and all-new).
    random: usize,
    /// `EngineOptions::sync_writes`. Without it the script syncs now and then (`Engine::sync`,
    /// `GroupStorage::sync`), and only a returned sync or close acknowledges what came before.
    sync_writes: bool,
    /// Without `sync_writes`: the percentage of steps that sync.
    sync_percent: u64,
    /// A root to start from; else a fresh root.
    start: Option<Start<'a>>,
    /// The steps, instead of seeded ones (and no reopens but the first open, the last close
    /// and the plan's).
    plan: Vec<Step>,
    /// Every how many mixes the recovered root also takes a write.
    cont_every: usize,
    /// `EngineOptions::encryption_key`, of every open of the script and of its crash points.
    key: Option<[u8; 32]>,
}

/// A root a script starts from: as durable (`durable`) and as the page cache holds it
/// (`cache`, the same when nothing is pending), the models from the durable state to the
/// cached one (what the steps in between left, the last one the cache's), and whether it holds
/// a torn journal tail (a strict open may refuse it until an open has cut it).
struct Start<'a> {
    durable: &'a Path,
    cache: &'a Path,
    models: Vec<Model>,
    torn: bool,
}

/// Makes the tree at `to` hold what `from` holds, writing files in place (their inodes kept)
/// and removing what `from` does not have.
fn overlay(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create a directory");
    let names = |d: &Path| -> BTreeMap<std::ffi::OsString, bool> {
        fs::read_dir(d)
            .expect("read a directory")
            .map(|e| {
                let e = e.expect("an entry");
                (e.file_name(), e.file_type().expect("its type").is_dir())
            })
            .collect()
    };
    let want = names(from);
    for (name, is_dir) in names(to) {
        if want.get(&name) != Some(&is_dir) && name != "LOCK" {
            let p = to.join(&name);
            if is_dir {
                fs::remove_dir_all(p).expect("remove a directory");
            } else {
                fs::remove_file(p).expect("remove a file");
            }
        }
    }
    for (name, is_dir) in want {
        if is_dir {
            overlay(&from.join(&name), &to.join(&name));
        } else if name != "LOCK" {
            let bytes = fs::read(from.join(&name)).expect("read a file");
            let p = to.join(&name);
            if fs::read(&p).ok().as_ref() != Some(&bytes) {
                fs::write(p, bytes).expect("write a file");
            }
        }
    }
}

/// Runs a script with every flush recorded, then checks a crash point at every flush and after
/// every step.
fn run_script(sc: &Script<'_>) -> Tally {
    let name = sc.name;
    let started = Instant::now();
    let base = test_base();
    let root = base.path().join("root");
    let scratch = base.path().join("scratch");
    match &sc.start {
        Some(st) => copy_root(st.durable, &root),
        None => fs::create_dir_all(&root).unwrap(),
    }
    let root = fs::canonicalize(&root).unwrap();
    let mut disk = Disk::default();
    disk.observe(&capture(&root, &BTreeMap::new()).unwrap());
    disk.flushed(Target::Fs);
    if let Some(st) = &sc.start {
        // What the page cache holds beyond the durable state: pending.
        overlay(st.cache, &root);
        disk.observe(&capture(&root, &BTreeMap::new()).unwrap());
    }
    PHASE.store(0, Ordering::SeqCst);
    *recorder() = Some(Recorder {
        root: root.clone(),
        last: BTreeMap::new(),
        events: Vec::new(),
        error: None,
    });
    let open = || {
        let o = EngineOptions {
            sync_writes: sc.sync_writes,
            // A third of the scripts rest whenever every record is checkpointed (the journal
            // gives back its spares and prepared segment): their renames and removals are
            // recorded and cut like the rest.
            journal_rest_after: if sc.seed.is_multiple_of(3) {
                Duration::ZERO
            } else {
                EngineOptions::default().journal_rest_after
            },
            ..opts(
                RecoveryMode::TolerateTailCorruption,
                sc.checkpoint_bytes,
                sc.key,
            )
        };
        Engine::open_with(&root, o).unwrap_or_else(|e| panic!("{name}: open: {e}"))
    };

    // Record: every step with its flushes; models[base + k] is the model after k steps (before
    // them: the start's models, from its durable state on).
    let mut r = Rng(splitmix(sc.seed));
    let mut models = sc
        .start
        .as_ref()
        .map_or_else(|| vec![Model::default()], |st| st.models.clone());
    let base = models.len() - 1;
    let first = models[base].clone();
    let mut script = Vec::new();
    PHASE.store(1, Ordering::SeqCst);
    let mut engine = Some(open());
    script.push(Step::Reopen);
    models.push(first);
    PHASE.store(2, Ordering::SeqCst);
    observe_now();
    let jitter_ms = jitter_ms();
    let mut jitter = Rng(sc.seed ^ 0x6A09_E667_F3BC_C908);
    let mut next_reopen = if sc.plan.is_empty() {
        r.range(10, 25)
    } else {
        u64::MAX
    };
    let steps = if sc.plan.is_empty() {
        sc.steps
    } else {
        sc.plan.len() + 1
    };
    for k in 2..=steps {
        let m = models.last().unwrap().clone();
        PHASE.store(2 * k - 1, Ordering::SeqCst);
        let e = engine.as_ref().unwrap();
        if k as u64 == next_reopen {
            next_reopen += r.range(10, 25);
            engine.take().unwrap().close().unwrap();
            engine = Some(open());
            script.push(Step::Reopen);
            models.push(m);
        } else if let Some(step) = sc.plan.get(k - 2) {
            let mut after = m;
            match step {
                Step::Op(op) => {
                    run_op(e, op)
                        .unwrap_or_else(|err| panic!("{name}: step {k} {}: {err}", op.summary()));
                    after.apply(op);
                }
                Step::Sync(None) => e.sync().unwrap(),
                Step::Sync(Some(gid)) => e.group(*gid).unwrap().sync().unwrap(),
                Step::Reopen => {
                    engine.take().unwrap().close().unwrap();
                    engine = Some(open());
                }
            }
            script.push(step.clone());
            models.push(after);
        } else if !sc.sync_writes && r.chance(sc.sync_percent) {
            let gid = (!m.groups.is_empty() && r.chance(40)).then(|| {
                let ids: Vec<u64> = m.groups.keys().copied().collect();
                ids[r.below(ids.len() as u64) as usize]
            });
            match gid {
                Some(gid) => e.group(gid).unwrap().sync(),
                None => e.sync(),
            }
            .unwrap_or_else(|err| panic!("{name}: step {k}, sync of {gid:?}: {err}"));
            script.push(Step::Sync(gid));
            models.push(m);
        } else {
            let op = m.gen_op(&mut r, &LIMITS);
            run_op(e, &op).unwrap_or_else(|err| panic!("{name}: step {k} {}: {err}", op.summary()));
            let mut after = m;
            after.apply(&op);
            script.push(Step::Op(op));
            models.push(after);
        }
        PHASE.store(2 * k, Ordering::SeqCst);
        observe_now();
        if let Some(ms) = jitter_ms {
            // The background threads (the writer's 20 ms passes, the journal thread) run at
            // other points between the operations than in a run at full speed.
            std::thread::sleep(Duration::from_micros(jitter.below(ms * 1000 + 1)));
        }
    }
    PHASE.store(2 * steps + 1, Ordering::SeqCst);
    engine.take().unwrap().close().unwrap();
    script.push(Step::Reopen);
    models.push(models.last().unwrap().clone());
    PHASE.store(2 * steps + 2, Ordering::SeqCst);
    observe_now();
    let rec = recorder().take().unwrap();
    if let Some(e) = rec.error {
        panic!("{name}: the flush recorder failed: {e}");
    }
    let recorded = started.elapsed();

    // Check: the events in order, a crash point at each.
    let mut t = Tally::default();
    let mut rng = Rng(splitmix(sc.seed ^ 0x0DD5));
    let events = rec.events.len();
    let mut widest = 0;
    for (n, ev) in rec.events.into_iter().enumerate() {
        disk.observe(&ev.capture);
        // At the latest, step k in flight (models[base + k] after it) or k steps returned; at
        // the earliest, `returned` steps returned.
        let (first, last) = ev.phase;
        let k = last.div_ceil(2);
        let inflight = first != last || last % 2 == 1;
        let returned = first / 2;
        // Everything up to the last acknowledging step that returned must be there; every
        // returned step with `sync_writes`.
        let acked = if sc.sync_writes {
            returned
        } else {
            (1..=returned)
                .rev()
                .find(|&j| script[j - 1].acknowledges())
                .unwrap_or(0)
        };
        // In `models`: from the durable start until a step acknowledged it.
        let lo = if acked == 0 { 0 } else { base + acked };
        // A group created or removed since then is so for good (both are durable on return).
        let mut floor = BTreeMap::new();
        for j in acked + 1..=returned {
            if let Step::Op(Op::Create { gid, .. } | Op::Remove { gid }) = &script[j - 1] {
                floor.insert(*gid, base + j - lo);
            }
        }
        widest = widest.max(base + k + 1 - lo);
        let acc = Accept {
            window: &models[lo..=base + k],
            floor: &floor,
            strict_may_refuse: sc.start.as_ref().is_some_and(|s| s.torn) && first < 2,
            inflight,
            cont_every: sc.cont_every,
            key: sc.key,
            // Once the first operation after the first open returned.
            refuse_keys: sc.key.is_some() && first >= 4,
        };
        let what = match script.get(k.max(1) - 1) {
            Some(Step::Op(op)) => op.summary(),
            Some(Step::Reopen) => "open/close".to_string(),
            Some(Step::Sync(None)) => "Engine::sync".to_string(),
            Some(Step::Sync(Some(g))) => format!("group {g}'s sync"),
            None => String::new(),
        };
        let label = format!(
            "{name}: event {n} ({} {:?}) {} step {k} ({what}), acknowledged up to step {acked}",
            ev.call,
            ev.target,
            if inflight { "during" } else { "after" },
        );
        // A point where nothing is pending is the last flush's state, checked already; but for
        // a root the script started from, the instant its open returned is checked anyway (what
        // that open found must then be durable as it will be served, in both modes).
        let opened = sc.start.is_some() && (first, last) == (2, 2);
        if !matches!(ev.target, Target::Nothing) || disk.pending() || opened {
            run_point(&disk, &label, acc, &scratch, &mut rng, sc.random, &mut t);
        }
        disk.flushed(ev.target);
        if t.violations.len() >= 20 {
            break;
        }
    }
    let syncs = script.iter().filter(|s| matches!(s, Step::Sync(_))).count();
    eprintln!(
        "{name}{}: {steps} steps ({syncs} syncs), {events} events recorded in {recorded:.1?}; {} \
         crash points (up to {widest} states per group), {} mixes ({} strict opens, {} \
         refused), {} continued after recovery, {} violations, {:.1?}",
        match (sc.key, t.keys_refused) {
            (None, _) => "",
            (Some(_), false) => " (encrypted)",
            (Some(_), true) => " (encrypted; a mix refused keys that do not fit it)",
        },
        t.points,
        t.mixes,
        t.strict_opens,
        t.strict_refused,
        t.continued,
        t.violations.len(),
        started.elapsed()
    );
    t
}

fn report(t: &Tally) {
    assert!(
        t.violations.is_empty(),
        "{} violations; the first ones:\n{}",
        t.violations.len(),
        t.violations
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// The recorder and the phase are process-wide: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A script with `sync_writes`, no background checkpoint, from a fresh root.
fn synced(name: &str, seed: u64, steps: usize, random: usize) -> Script<'_> {
    Script {
        name,
        seed,
        steps,
        checkpoint_bytes: u64::MAX / 2,
        random,
        sync_writes: true,
        sync_percent: 0,
        start: None,
        plan: Vec::new(),
        cont_every: 8,
        key: script_key(seed),
    }
}

/// A fresh root's first operations (open, groups created, the first writes), every crash point.
#[test]
fn power_loss_fresh_root() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    report(&run_script(&synced("fresh root", 0x5EED_0000, 8, 2)));
}

#[test]
fn power_loss_engine_root() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let a = run_script(&synced("deterministic", 0x5EED_0001, 100, 5));
    let b = run_script(&Script {
        checkpoint_bytes: 48 << 10,
        ..synced("background", 0x5EED_0002, 70, 4)
    });
    // Short: encrypted, in a debug build, each crash point costs several times more.
    let c = run_script(&Script {
        checkpoint_bytes: 24 << 10,
        ..synced("background, short", 0x5EED_0009, 16, 2)
    });
    report(&a);
    report(&b);
    report(&c);
}

/// `RAFTWAL_ENGINE_POWER_LOSS_JITTER_MS=30` (a long run by hand): after each step a script
/// sleeps up to that many milliseconds (seeded), so that the background threads' work (the
/// writer's passes every 20 ms, the journal thread's preparations) lands at other points
/// between the operations than at full speed, where a script's 80 steps take about 150 ms.
fn jitter_ms() -> Option<u64> {
    let v = std::env::var("RAFTWAL_ENGINE_POWER_LOSS_JITTER_MS").ok()?;
    Some(
        v.parse().unwrap_or_else(|_| {
            panic!("RAFTWAL_ENGINE_POWER_LOSS_JITTER_MS={v}: want milliseconds")
        }),
    )
}

/// Seeded scripts for a long run by hand: `RAFTWAL_ENGINE_POWER_LOSS_SCRIPTS=40` (none in
/// `cargo test`; `RAFTWAL_ENGINE_POWER_LOSS_FIRST=100` to start elsewhere), each of
/// `RAFTWAL_ENGINE_POWER_LOSS_STEPS` steps (80). Script `n` (seed `SEEDED + n`) is, by `n % 4`,
/// synced with no background checkpoint, synced with background checkpoints, unsynced syncing
/// a quarter of its steps, unsynced syncing an eighth; odd `n` are encrypted (or every one,
/// or none, with `RAFTWAL_ENGINE_POWER_LOSS_ENCRYPT`).
#[test]
fn power_loss_seeded_scripts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let steps = std::env::var("RAFTWAL_ENGINE_POWER_LOSS_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    let scripts = env::env_range(
        "RAFTWAL_ENGINE_POWER_LOSS_FIRST",
        "RAFTWAL_ENGINE_POWER_LOSS_SCRIPTS",
        0,
    );
    let mut failed = Vec::new();
    for n in scripts {
        let name = format!("seeded script {n}");
        let base = synced(&name, SEEDED + n, steps, 4);
        let sc = match n % 4 {
            0 => base,
            1 => Script {
                checkpoint_bytes: 48 << 10,
                ..base
            },
            k => Script {
                sync_writes: false,
                sync_percent: if k == 2 { 25 } else { 12 },
                ..base
            },
        };
        let t = run_script(&sc);
        if !t.violations.is_empty() {
            failed.push((n, t));
        }
    }
    for (n, t) in &failed {
        eprintln!("seeded script {n}: {} violations", t.violations.len());
    }
    if let Some((_, t)) = failed.first() {
        report(t);
    }
}

/// `sync_writes: false`: what a returned `Engine::sync()`, `GroupStorage::sync()` or close
/// acknowledged survives every mix; what came after may be lost, but only as a suffix of each
/// group's history (each group in one of the states the steps since gave it). One script syncs
/// every fourth step or so, one every eighth (longer stretches: several journal segments
/// written between two syncs).
#[test]
fn power_loss_unsynced_writes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let a = run_script(&Script {
        sync_writes: false,
        sync_percent: 25,
        ..synced("unsynced", 0x5EED_0003, 80, 4)
    });
    let b = run_script(&Script {
        sync_writes: false,
        sync_percent: 12,
        ..synced("unsynced, rare syncs", 0x5EED_0004, 80, 3)
    });
    report(&a);
    report(&b);
}

/// One part of a write: `n` entries of term 1 for group `gid` from `first`, commit `commit`.
fn part(gid: u64, first: u64, n: usize, commit: u64) -> Part {
    Part {
        gid,
        snapshot: None,
        first,
        terms: vec![1; n],
        hs: (1, 1, commit),
    }
}

/// Runs `ops` on an engine holding a copy of nothing (a fresh root at `work`) with `sync_writes`
/// as asked, imaging the root as a kill leaves it into `images[k]` after the first
/// `after[k]` operations (and `e.sync()` where `syncs` says, before the operation of that
/// index). Again from scratch if it took so long that a periodic checkpoint may have run.
/// Returns the models after each operation (the first: the empty root).
fn prepare(
    work: &Path,
    sync_writes: bool,
    key: Option<[u8; 32]>,
    ops: &[Op],
    syncs: &[usize],
    images: &[(&Path, usize)],
) -> Vec<Model> {
    for _ in 0..5 {
        let _ = fs::remove_dir_all(work);
        let started = Instant::now();
        let o = EngineOptions {
            sync_writes,
            ..opts(RecoveryMode::TolerateTailCorruption, u64::MAX / 2, key)
        };
        let e = Engine::open_with(work, o).unwrap();
        let mut models = vec![Model::default()];
        for (k, op) in ops.iter().enumerate() {
            if syncs.contains(&k) {
                e.sync().unwrap();
            }
            for (to, n) in images {
                if *n == k {
                    copy_root(work, to);
                }
            }
            run_op(&e, op).unwrap_or_else(|err| panic!("prepare: {}: {err}", op.summary()));
            let mut m = models.last().unwrap().clone();
            m.apply(op);
            models.push(m);
        }
        for (to, n) in images {
            if *n == ops.len() {
                copy_root(work, to);
            }
        }
        let slow = started.elapsed() > Duration::from_secs(3);
        drop(e);
        if !slow {
            return models;
        }
    }
    panic!("prepare: five runs took longer than the checkpoint period");
}

/// The records of a journal segment (docs/FORMAT.md: a 4 KiB header, then `length u32 | crc
/// u32 | sequence u64 | body` padded to 8 bytes): (offset, length). None for a segment whose
/// header is zero (prepared, never written).
fn segment_records(segment: &[u8]) -> Vec<(usize, usize)> {
    if segment[..SEGMENT_RECORDS_AT].iter().all(|&b| b == 0) {
        return Vec::new();
    }
    let u64_at = |at: usize| u64::from_le_bytes(segment[at..at + 8].try_into().unwrap());
    let mut want = u64_at(SEGMENT_FIRST_SEQ_AT);
    let (mut at, mut out) = (SEGMENT_RECORDS_AT, Vec::new());
    while at + RECORD_BODY_AT <= segment.len() {
        let l = at + RECORD_LEN_AT;
        let len = u32::from_le_bytes(segment[l..l + 4].try_into().unwrap()) as usize;
        let seq = u64_at(at + RECORD_SEQ_AT);
        if seq != want || at + RECORD_BODY_AT + len > segment.len() {
            break;
        }
        out.push((at, RECORD_BODY_AT + len));
        want += 1;
        at = (at + RECORD_BODY_AT + len).next_multiple_of(RECORD_ALIGN);
    }
    out
}

/// A root with a torn journal tail (its last record's body damaged, the writes before it
/// acknowledged): open cuts it, starting the next segment, durably; every instant of that, and
/// of the writes after it, is a crash point (a strict open may refuse the tail until the cut is
/// durable, and must open once the cutting open returned).
///
/// Whether the journal's thread had named the next segment (zeros, header zero) when the root
/// was copied depends on timing, so the image is taken without it and the cut is run both
/// ways: without a prepared segment, and with one (made as the thread makes it: named as the
/// next segment, every byte zero), which open must set aside while it cuts the segment before.
#[test]
fn power_loss_while_a_torn_tail_is_cut() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let base = test_base();
    let torn = base.path().join("torn");
    let ops = [
        Op::Create {
            gid: 1,
            raft_id: 11,
        },
        Op::Create {
            gid: 2,
            raft_id: 21,
        },
        Op::Write(vec![part(1, 1, 5, 5)]),
        Op::Write(vec![part(1, 6, 5, 8), part(2, 1, 3, 3)]),
        Op::Write(vec![part(2, 4, 3, 6)]),
    ];
    const SEED: u64 = 0x5EED_0005;
    let models = prepare(
        &base.path().join("work"),
        true,
        script_key(SEED),
        &ops,
        &[],
        &[(&torn, ops.len())],
    );
    let jdir = torn.join("journal");
    let mut segs: Vec<PathBuf> = fs::read_dir(&jdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == segment_name(1).len())
        .collect();
    segs.sort();
    // Newest first: a prepared segment (header zero) out of the image; the newest written one
    // gets its last record damaged.
    let (seg, mut b) = loop {
        let seg = segs.pop().expect("a journal segment with records");
        let b = fs::read(&seg).unwrap();
        if b[..SEGMENT_RECORDS_AT].iter().all(|&x| x == 0) {
            fs::remove_file(&seg).unwrap();
            continue;
        }
        break (seg, b);
    };
    let records = segment_records(&b);
    // The three writes, one record each (creating a group writes its meta page, no record).
    assert_eq!(records.len(), 3, "records of {}", seg.display());
    let (at, len) = records[2];
    b[at + len - 1] ^= 0x40;
    fs::write(&seg, &b).unwrap();
    let next_id: u64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    for prepared in [false, true] {
        let image = base.path().join(format!("torn-{prepared}"));
        copy_root(&torn, &image);
        if prepared {
            let next = image.join("journal").join(segment_name(next_id + 1));
            fs::write(next, vec![0u8; b.len()]).unwrap();
        }
        let plan = vec![
            Step::Op(Op::Write(vec![part(2, 4, 2, 4)])),
            Step::Op(Op::Write(vec![part(1, 11, 3, 12), part(2, 6, 1, 6)])),
        ];
        let name = if prepared {
            "torn tail cut, next segment prepared"
        } else {
            "torn tail cut"
        };
        report(&run_script(&Script {
            start: Some(Start {
                durable: &image,
                cache: &image,
                models: vec![models[ops.len() - 1].clone()],
                torn: true,
            }),
            plan,
            cont_every: 1,
            ..synced(name, SEED, 0, 4)
        }));
    }
}

/// A group created after writes that no sync made durable: its meta page names the journal
/// position it starts at, which must be durable (else a power loss gives those sequence numbers
/// to new records, which replay then skips for the group).
#[test]
fn power_loss_creating_a_group_after_unsynced_writes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let plan = vec![
        Step::Op(Op::Create {
            gid: 1,
            raft_id: 11,
        }),
        Step::Op(Op::Write(vec![part(1, 1, 3, 0)])),
        Step::Op(Op::Write(vec![part(1, 4, 3, 2)])),
        Step::Op(Op::Create {
            gid: 2,
            raft_id: 21,
        }),
        Step::Op(Op::Write(vec![part(1, 7, 2, 6), part(2, 1, 2, 1)])),
        Step::Sync(None),
    ];
    report(&run_script(&Script {
        sync_writes: false,
        plan,
        cont_every: 1,
        ..synced("group created after unsynced writes", 0x5EED_0006, 0, 4)
    }));
}

/// An engine without `sync_writes` killed after writes over several journal segments that no
/// sync made durable (what the page cache held then is pending, the durable state is its last
/// sync's), then opened and written with syncs: what the open read is made durable before a
/// record after it is acknowledged, so every mix after the first sync holds the killed
/// engine's writes too.
#[test]
fn power_loss_after_a_kill_without_sync_writes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let base = test_base();
    let (durable, cache) = (base.path().join("durable"), base.path().join("cache"));
    let mut ops = vec![
        Op::Create {
            gid: 1,
            raft_id: 11,
        },
        Op::Create {
            gid: 2,
            raft_id: 21,
        },
        Op::Write(vec![part(1, 1, 20, 10), part(2, 1, 20, 10)]),
    ];
    let synced_at = ops.len();
    // Records of about 20 KiB (every 37th payload is 6 KB): journal segments of 32 KiB turn over.
    let (mut next, mut next2) = (21, 21);
    for _ in 0..8 {
        ops.push(Op::Write(vec![
            part(1, next, 120, next),
            part(2, next2, 40, next2),
        ]));
        next += 120;
        next2 += 40;
    }
    const SEED: u64 = 0x5EED_0007;
    let models = prepare(
        &base.path().join("work"),
        false,
        script_key(SEED),
        &ops,
        &[synced_at],
        &[(&durable, synced_at), (&cache, ops.len())],
    );
    // The journal's segments are named durably before they take a record (the engine prepares
    // them and flushes the directory): in the killed engine's last state their names are
    // durable, their records not (a prepared segment is zeros until then).
    for ent in fs::read_dir(cache.join("journal")).unwrap() {
        let ent = ent.unwrap();
        let there = durable.join("journal").join(ent.file_name());
        if !there.exists() {
            let f = fs::File::create(there).unwrap();
            f.set_len(ent.metadata().unwrap().len()).unwrap();
        }
    }
    let plan = vec![
        Step::Op(Op::Write(vec![part(1, next, 2, next)])),
        Step::Sync(None),
        Step::Op(Op::Write(vec![part(1, next + 2, 2, next)])),
        Step::Sync(Some(1)),
    ];
    report(&run_script(&Script {
        sync_writes: false,
        start: Some(Start {
            durable: &durable,
            cache: &cache,
            models: models[synced_at..].to_vec(),
            torn: false,
        }),
        plan,
        cont_every: 2,
        ..synced("kill without sync_writes", SEED, 0, 4)
    }));
}

/// `truncate_entries_until` without `sync_writes`, of entries the group's files hold durably,
/// after a write no sync made durable: the files change in place only once the journal's
/// records up to the truncation are durable (else a power loss could keep entries with their
/// data cleared and lose the write before: a state the group never was in).
#[test]
fn power_loss_truncating_without_sync_writes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let plan = vec![
        Step::Op(Op::Create {
            gid: 1,
            raft_id: 11,
        }),
        Step::Op(Op::Write(vec![part(1, 1, 12, 10)])),
        Step::Reopen,
        Step::Op(Op::Write(vec![part(1, 13, 1, 10)])),
        Step::Op(Op::Truncate { gid: 1, index: 6 }),
        Step::Op(Op::Write(vec![part(1, 14, 2, 12)])),
        Step::Sync(Some(1)),
    ];
    report(&run_script(&Script {
        sync_writes: false,
        plan,
        cont_every: 2,
        ..synced("truncate without sync_writes", 0x5EED_0008, 0, 12)
    }));
}

/// Records of an earlier life past a clean end (found by a review). Without `sync_writes`,
/// record 2 (group 1) ends exactly at a page boundary and record 3 (group 2) starts the next
/// page, both unflushed. A power loss keeps record 3's page but not record 2's (pages reach the
/// disk in any order between flushes): open finds zeros where record 2 began, a clean end.
/// Entry 2 of group 1 is then written again with the same size, acknowledged, and the engine
/// killed or closed. Open once went on appending in that segment, so the new record ended where
/// the old record 3 began, with the next sequence number and a valid checksum: the next open
/// replayed it into group 2, which no acknowledged write ever touched and the open before had
/// shown empty.
#[test]
fn power_loss_never_revives_a_record_left_past_a_clean_end() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    for closed in [false, true] {
        revived_past_a_clean_end(closed);
    }
}

fn revived_past_a_clean_end(closed: bool) {
    fn entry(index: u64, data: Vec<u8>) -> raft::prelude::Entry {
        let mut e = raft::prelude::Entry::default();
        e.index = index;
        e.term = 1;
        e.data = data.into();
        e
    }
    fn hs() -> raft::prelude::HardState {
        let mut h = raft::prelude::HardState::default();
        h.term = 1;
        h.vote = 1;
        h
    }
    /// The segment written: the first (open made it); the next one, prepared in the
    /// background, holds no record.
    fn only_segment(root: &Path) -> PathBuf {
        let mut segs: Vec<PathBuf> = fs::read_dir(root.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().len() == segment_name(1).len())
            .collect();
        segs.sort();
        assert!(
            segs.first() == Some(&root.join("journal").join(segment_name(1))),
            "segment 1 first: {segs:?}"
        );
        segs.swap_remove(0)
    }
    use raft::Storage;
    let none = raft::prelude::Snapshot::default;
    let ctx = || raft::GetEntriesContext::empty(false);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let opts = EngineOptions {
        sync_writes: false,
        checkpoint_bytes: 1 << 40,
        ..EngineOptions::default()
    };
    let e = Engine::open_with(&a, opts).unwrap();
    let g1 = e.create_group(1, 1).unwrap();
    let g2 = e.create_group(2, 1).unwrap();
    g1.save(&hs(), &[entry(1, vec![1; 100])], &none()).unwrap();
    e.sync().unwrap();
    let seg = only_segment(&a);
    let durable = fs::read(&seg).unwrap();
    let (at1, len1) = segment_records(&durable)[0];
    let end1 = (at1 + len1).next_multiple_of(RECORD_ALIGN);
    // A record's overhead over its entry's data, found by writing one (record 2); then how
    // much data ends record 3 at a page boundary.
    let page_end = (end1 + 2 * PAGE).next_multiple_of(PAGE);
    let probe_len = 1000;
    g1.save(&hs(), &[entry(2, vec![2; probe_len])], &none())
        .unwrap();
    let written = fs::read(&seg).unwrap();
    let (at2, len2) = segment_records(&written)[1];
    // (The entry's length takes two bytes of varint for `probe_len` and for `d2` alike.)
    let overhead = len2 - probe_len;
    assert_eq!(at2, end1);
    let at3 = (at2 + len2).next_multiple_of(RECORD_ALIGN);
    let d2 = page_end - at3 - overhead;
    // Overwrite entry 2 with the size that ends at `page_end` (record 3 of this life), then
    // group 2's entry (record 4, starting that page).
    g1.save(&hs(), &[entry(2, vec![3; d2])], &none()).unwrap();
    g2.save(&hs(), &[entry(1, b"never acknowledged".to_vec())], &none())
        .unwrap();
    let now = fs::read(&seg).unwrap();
    let recs = segment_records(&now);
    assert_eq!(recs.len(), 4, "{recs:?}");
    assert_eq!(
        recs[2].0 + recs[2].1,
        page_end,
        "record 3 ends at a page boundary"
    );
    assert_eq!(recs[3].0, page_end, "record 4 starts a page");
    e.sync().unwrap();
    drop((g1, g2));
    std::mem::forget(e); // `a` is not touched again

    // The power loss (a root where only record 1 had been flushed, then records 2-4 written):
    // the pages from record 1's end to `page_end` as flushed (zeros), record 4's page kept.
    copy_root(&a, &b);
    let seg_b = b.join("journal").join(seg.file_name().unwrap());
    let mut img = fs::read(&seg_b).unwrap();
    let first_page = end1 / PAGE * PAGE;
    img[first_page..page_end].copy_from_slice(&durable[first_page..page_end]);
    fs::write(&seg_b, &img).unwrap();

    let e = Engine::open(&b).unwrap();
    let g1 = e.group(1).unwrap();
    let g2 = e.group(2).unwrap();
    assert_eq!(g1.last_index().unwrap(), 1);
    assert_eq!(
        g2.last_index().unwrap(),
        0,
        "group 2 empty after the power loss"
    );
    // Entry 2 again, the size that ends at `page_end` as record 2: acknowledged (synced).
    // Record 3 was the overwrite: its sequence number follows, so write two records.
    g1.save(&hs(), &[entry(2, vec![9; probe_len])], &none())
        .unwrap();
    g1.save(&hs(), &[entry(2, vec![8; d2])], &none()).unwrap();
    drop((g1, g2));
    if closed {
        e.close().unwrap();
        fs::rename(&b, &c).unwrap();
    } else {
        copy_root(&b, &c);
        std::mem::forget(e);
    }
    let e = Engine::open(&c).unwrap();
    let g1 = e.group(1).unwrap();
    let g2 = e.group(2).unwrap();
    assert_eq!(
        g1.entries(2, 3, None, ctx()).unwrap()[0].data.to_vec(),
        vec![8; d2]
    );
    assert_eq!(
        g2.last_index().unwrap(),
        0,
        "closed {closed}: group 2 holds an entry no acknowledged write made (an earlier \
         life's record past the end open found, reached by a record ending where it begins)"
    );
}

/// A capture records every directory's listing as the directory held it, whatever moves
/// meanwhile: a group directory renamed away (`remove_group`'s first step) while a background
/// thread's flush captures the root is read whole or not at all. Its files were once read by
/// path, so those under the old name went missing from its listing; a mix then paired the
/// parent's listing before the rename with that listing, a group directory without its
/// `wal.meta` that no instant of the engine ever left (seeded script 7020, four violations
/// "open .../groups/10/wal.meta: No such file or directory").
#[test]
fn a_capture_reads_a_directory_renamed_meanwhile_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let group = root.join("groups").join("10");
    fs::create_dir_all(&group).unwrap();
    for name in ["wal.meta", "00000000000000000001.wal"] {
        fs::write(group.join(name), name.as_bytes()).unwrap();
    }
    let ino = fs::metadata(&group).unwrap().ino();
    let mut moved = false;
    let c = capture_with(&root, &BTreeMap::new(), &mut |dir: &Path| {
        if !moved && fs::metadata(dir).is_ok_and(|m| m.ino() == ino) {
            moved = true;
            fs::rename(&group, root.join("groups").join("10.removing")).unwrap();
        }
    })
    .unwrap();
    assert!(moved, "the walk never listed the group directory");
    let listing = c.dirs.get(&ino).expect("the group directory's listing");
    let names: Vec<&str> = listing.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["00000000000000000001.wal", "wal.meta"],
        "the group directory's listing"
    );
}
